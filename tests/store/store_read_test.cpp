// Reads: pooled read-only connections that never wait for the writer, and
// reads made together in one ReadTransaction.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "store/sqlite_store.h"
#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

constexpr auto kHangGuard = std::chrono::seconds(60);

std::unique_ptr<Store> openWithItems(const TempDir& dir) {
  StoreOptions options;
  options.dataDir = dir.path();
  auto store = Store::open(options);
  store->writeAndWait([](Connection& connection) {
    connection.exec("CREATE TABLE items(id INTEGER PRIMARY KEY)");
  });
  return store;
}

std::int64_t countItems(Store& store) {
  std::int64_t count = -1;
  store.read([&](Connection& connection) {
    auto query = connection.prepare("SELECT count(*) FROM items");
    if (query.step()) count = query.columnInt(0);
  });
  return count;
}

TEST(StoreRead, ReadDuringAnOpenWriteSeesOnlyCommittedDataAndDoesNotWait) {
  TempDir dir;
  auto store = openWithItems(dir);
  auto inserted = std::make_shared<std::promise<void>>();
  auto readDone = std::make_shared<std::promise<void>>();
  auto readDoneFuture = readDone->get_future().share();
  auto insertedFuture = inserted->get_future();
  store->write(
      [inserted, readDoneFuture](Connection& connection) {
        connection.exec("INSERT INTO items(id) VALUES (1)");
        inserted->set_value();
        // Keeps the transaction open until the reader has finished. Were reads
        // blocked by the writer, this would time out and the read below would
        // see the row: the test fails either way.
        if (readDoneFuture.wait_for(kHangGuard) != std::future_status::ready) {
          throw std::runtime_error("reader never finished");
        }
      },
      nullptr);
  insertedFuture.wait();
  EXPECT_EQ(countItems(*store), 0) << "a read saw an uncommitted write";
  readDone->set_value();
  store->flush();
  EXPECT_EQ(countItems(*store), 1);
}

TEST(StoreRead, ReadsRunConcurrentlyWithWritesFromAnotherThread) {
  constexpr int kWrites = 300;
  TempDir dir;
  auto store = openWithItems(dir);
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) {
      store->writeAndWait([i](Connection& connection) {
        connection.prepare("INSERT INTO items(id) VALUES (?1)").bind(1, std::int64_t{i}).run();
      });
    }
    writing = false;
  });
  std::int64_t last = 0;
  int reads = 0;
  bool monotonic = true;
  while (writing.load()) {
    std::int64_t now = countItems(*store);
    monotonic = monotonic && now >= last && now <= kWrites;
    last = now;
    ++reads;
  }
  writer.join();
  EXPECT_TRUE(monotonic) << "a reader saw the row count go backwards or overshoot";
  EXPECT_GT(reads, 0);
  EXPECT_EQ(countItems(*store), kWrites);
}

TEST(StoreRead, ManyConcurrentReadersBeyondThePoolSize) {
  TempDir dir;
  auto store = openWithItems(dir);
  store->writeAndWait(
      [](Connection& connection) { connection.exec("INSERT INTO items(id) VALUES (1), (2)"); });
  constexpr std::size_t kReaders = SqliteStore::kMaxIdleReaders * 2;
  std::atomic<int> correct{0};
  std::vector<std::thread> readers;
  for (std::size_t r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (countItems(*store) == 2) correct.fetch_add(1);
      }
    });
  }
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(correct.load(), static_cast<int>(kReaders) * 50);
}

TEST(StoreRead, ReadConnectionRefusesWrites) {
  TempDir dir;
  auto store = openWithItems(dir);
  try {
    store->read(
        [](Connection& connection) { connection.exec("INSERT INTO items(id) VALUES (1)"); });
    FAIL() << "a read connection wrote";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("INSERT INTO items"), std::string::npos) << e.what();
  }
  EXPECT_EQ(countItems(*store), 0);
}

TEST(StoreRead, ExceptionsPropagateAndTheConnectionIsReusable) {
  TempDir dir;
  auto store = openWithItems(dir);
  EXPECT_THROW(store->read([](Connection& connection) {
    connection.exec("BEGIN");  // left open by the throw; must not pin a snapshot
    connection.prepare("SELECT count(*) FROM items").step();
    throw std::runtime_error("reader gave up");
  }),
               std::runtime_error);
  store->writeAndWait(
      [](Connection& connection) { connection.exec("INSERT INTO items(id) VALUES (5)"); });
  EXPECT_EQ(countItems(*store), 1) << "a pooled reader kept an old snapshot";
}

TEST(StoreRead, StatementErrorsCarryMessageAndSql) {
  TempDir dir;
  auto store = openWithItems(dir);
  try {
    store->read([](Connection& connection) { connection.prepare("SELECT nope FROM items"); });
    FAIL() << "bad SQL prepared";
  } catch (const StoreError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("no such column: nope"), std::string::npos) << message;
    EXPECT_NE(message.find("SELECT nope FROM items"), std::string::npos) << message;
  }
  EXPECT_THROW(
      store->read([](Connection& connection) { connection.prepare("SELECT 1; SELECT 2"); }),
      StoreError);
}

TEST(StoreRead, BindingAndColumnsRoundTrip) {
  TempDir dir;
  auto store = openWithItems(dir);
  const std::string blob("\0\x01\xff", 3);
  store->writeAndWait([&](Connection& connection) {
    connection.exec("CREATE TABLE values_(i INTEGER, t TEXT, b BLOB, n TEXT, e BLOB)");
    connection.prepare("INSERT INTO values_ VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(1, std::int64_t{-9'000'000'000})
        .bind(2, std::string_view("héllo"))
        .bindBlob(3, blob)
        .bindNull(4)
        .bindBlob(5, std::string_view())
        .run();
  });
  store->read([&](Connection& connection) {
    auto query = connection.prepare("SELECT i, t, b, n, e, typeof(e) FROM values_");
    ASSERT_TRUE(query.step());
    EXPECT_EQ(query.columnInt(0), -9'000'000'000);
    EXPECT_EQ(query.columnText(1), "héllo");
    EXPECT_EQ(query.columnBlob(2), blob);
    EXPECT_TRUE(query.columnIsNull(3));
    EXPECT_FALSE(query.columnIsNull(4)) << "an empty blob became NULL";
    EXPECT_EQ(query.columnBlob(4), "");
    EXPECT_EQ(query.columnText(5), "blob");
    EXPECT_FALSE(query.step());
  });
}

// ---------------------------------------------------------------- ReadTransaction

void insertItem(Store& store, std::int64_t id) {
  store.writeAndWait([id](Connection& connection) {
    connection.prepare("INSERT INTO items(id) VALUES (?1)").bind(1, id).run();
  });
}

// Each test's store, and a ReadTransaction on it whose snapshot predates a commit.
class ReadTransactions : public ::testing::Test {
 protected:
  // Opens a transaction, takes its snapshot (no rows), then commits row 1.
  std::unique_ptr<ReadTransaction> snapshotThenInsert() {
    auto reads = store->readTransaction();
    EXPECT_EQ(countItems(*store), 0);
    insertItem(*store, 1);
    return reads;
  }

  TempDir dir;
  std::unique_ptr<Store> store = openWithItems(dir);
};

TEST_F(ReadTransactions, ItsReadsShareOneSnapshotUntilRefreshAfterACommit) {
  auto reads = snapshotThenInsert();
  EXPECT_EQ(countItems(*store), 0) << "a read inside the transaction took a new snapshot";
  reads->refresh();
  EXPECT_EQ(countItems(*store), 1) << "refresh() kept a snapshot older than a commit";
  reads->refresh();  // nothing committed since: the snapshot stays, and still reads
  EXPECT_EQ(countItems(*store), 1);
}

TEST_F(ReadTransactions, RefreshSeesAWriteWhoseDoneCallbackHasBegun) {
  auto reads = store->readTransaction();
  EXPECT_EQ(countItems(*store), 0);  // the snapshot: before the write below
  auto doneBegan = std::make_shared<std::promise<void>>();
  auto doneBeganFuture = doneBegan->get_future();
  auto refreshed = std::make_shared<std::promise<void>>();
  auto refreshedFuture = refreshed->get_future().share();
  store->write([](Connection& connection) { connection.exec("INSERT INTO items(id) VALUES (7)"); },
               [doneBegan, refreshedFuture](std::optional<std::string> error) {
                 EXPECT_FALSE(error) << error.value_or("");
                 doneBegan->set_value();
                 // Holds the writer in its done callback until the reader refreshed:
                 // the commit must have been counted before this callback began.
                 refreshedFuture.wait_for(kHangGuard);
               });
  ASSERT_EQ(doneBeganFuture.wait_for(kHangGuard), std::future_status::ready);
  reads->refresh();
  std::int64_t seen = countItems(*store);
  refreshed->set_value();
  EXPECT_EQ(seen, 1) << "a write whose done callback had begun was not visible after refresh()";
  store->flush();
}

TEST_F(ReadTransactions, OtherThreadsReadOutsideIt) {
  auto reads = snapshotThenInsert();
  std::int64_t elsewhere = -1;
  std::thread other([&] { elsewhere = countItems(*store); });
  other.join();
  EXPECT_EQ(elsewhere, 1) << "another thread's read ran in this thread's old snapshot";
  EXPECT_EQ(countItems(*store), 0);
}

TEST_F(ReadTransactions, EndingItLeavesNoSnapshotPinnedOnThePooledConnection) {
  snapshotThenInsert();  // and ended at once
  EXPECT_EQ(countItems(*store), 1) << "the transaction outlived its ReadTransaction";
}

TEST_F(ReadTransactions, AReadThatThrowsInsideItPropagatesAndItsSnapshotGoesOn) {
  auto reads = snapshotThenInsert();
  EXPECT_THROW(store->read([](Connection& connection) {
    connection.prepare("SELECT count(*) FROM items").step();
    throw std::runtime_error("reader gave up");
  }),
               std::runtime_error);
  EXPECT_EQ(countItems(*store), 0) << "the throw ended the shared snapshot";
}

TEST_F(ReadTransactions, ANestedOneJoinsTheOpenOneAndEndsNothing) {
  auto outer = snapshotThenInsert();
  {
    auto inner = store->readTransaction();
    EXPECT_EQ(countItems(*store), 0) << "the nested one took a snapshot of its own";
  }
  EXPECT_EQ(countItems(*store), 0) << "ending the nested one ended the outer one's snapshot";
  {
    auto inner = store->readTransaction();
    inner->refresh();  // acts on the open one
  }
  EXPECT_EQ(countItems(*store), 1);
}

TEST(ReadTransactionStores, ReadsOfAnotherStoreOnTheSameThreadAreNotInIt) {
  TempDir dirA;
  TempDir dirB;
  auto a = openWithItems(dirA);
  auto b = openWithItems(dirB);
  auto reads = a->readTransaction();
  EXPECT_EQ(countItems(*a), 0);
  EXPECT_EQ(countItems(*b), 0);
  insertItem(*b, 1);
  EXPECT_EQ(countItems(*b), 1) << "store b's read ran in store a's transaction";
}

}  // namespace
}  // namespace switchboard::store
