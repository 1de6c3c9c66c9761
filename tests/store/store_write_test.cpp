// Writes: group commit, durability across reopen, failure isolation, shutdown,
// joinable writes and items written alone within a write.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

// Only a guard against a hung test, never the thing measured.
constexpr auto kHangGuard = std::chrono::seconds(60);

StoreOptions optionsIn(const TempDir& dir) {
  StoreOptions options;
  options.dataDir = dir.path();
  return options;
}

void createItems(Store& store) {
  store.writeAndWait([](Connection& connection) {
    connection.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)");
  });
}

Store::WriteFn insertItem(std::int64_t id) {
  return [id](Connection& connection) {
    connection.prepare("INSERT INTO items(id, payload) VALUES (?1, ?2)")
        .bind(1, id)
        .bind(2, std::string_view("item " + std::to_string(id)))
        .run();
  };
}

std::vector<std::int64_t> itemIds(Store& store) {
  std::vector<std::int64_t> ids;
  store.read([&](Connection& connection) {
    auto query = connection.prepare("SELECT id FROM items ORDER BY id");
    while (query.step()) ids.push_back(query.columnInt(0));
  });
  return ids;
}

// Collects the outcome of each write by its index; thread-safe.
class Outcomes {
 public:
  Store::DoneFn doneFor(std::size_t index) {
    return [this, index](std::optional<std::string> error) {
      std::lock_guard lock(mutex_);
      if (outcomes_.size() <= index) outcomes_.resize(index + 1);
      outcomes_[index].push_back(error ? *error : std::string("ok"));
    };
  }
  // Each write's outcomes ("ok" or the error): exactly one each if all is well.
  std::vector<std::vector<std::string>> snapshot() const {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::vector<std::string>> outcomes_;
};

// Holds the writer inside a write until release(), so that everything queued
// meanwhile is taken as one batch afterwards: batching made deterministic.
// Destruction releases the writer and waits for the blocking write's done.
class BlockedWriter {
 public:
  explicit BlockedWriter(Store& store) : state_(std::make_shared<State>()) {
    auto startedFuture = state_->started.get_future();
    outcome_ = state_->done.get_future();
    store.write(
        [state = state_](Connection&) {
          state->started.set_value();
          if (state->releaseFuture.wait_for(kHangGuard) != std::future_status::ready) {
            throw std::runtime_error("BlockedWriter was never released");
          }
        },
        [state = state_](std::optional<std::string> error) {
          state->done.set_value(std::move(error));
        });
    startedFuture.wait();
  }
  ~BlockedWriter() {
    release();
    if (outcome_.valid()) outcome_.wait();
  }

  void release() {
    if (!released_) state_->release.set_value();
    released_ = true;
  }
  std::optional<std::string> outcome() { return outcome_.get(); }

 private:
  // Shared with the callbacks, which may outlive a set_value's return.
  struct State {
    std::promise<void> started;
    std::promise<void> release;
    std::shared_future<void> releaseFuture = release.get_future().share();
    std::promise<std::optional<std::string>> done;
  };
  std::shared_ptr<State> state_;
  std::future<std::optional<std::string>> outcome_;
  bool released_ = false;
};

TEST(StoreWrite, GroupCommitMakesConcurrentWritesDurable) {
  constexpr int kThreads = 4;
  constexpr int kWritesPerThread = 500;
  constexpr std::size_t kTotal = kThreads * kWritesPerThread;
  TempDir dir;
  Outcomes outcomes;
  StoreStats stats;
  {
    auto store = Store::open(optionsIn(dir));
    createItems(*store);
    StoreStats before = store->stats();
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < kWritesPerThread; ++i) {
          std::size_t index = static_cast<std::size_t>(t * kWritesPerThread + i);
          store->write(insertItem(static_cast<std::int64_t>(index)), outcomes.doneFor(index));
        }
      });
    }
    for (auto& writer : writers) writer.join();
    store->flush();
    stats = store->stats();
    stats.writes -= before.writes;
    stats.commits -= before.commits;
  }
  auto seen = outcomes.snapshot();
  ASSERT_EQ(seen.size(), kTotal);
  for (std::size_t i = 0; i < kTotal; ++i) {
    ASSERT_EQ(seen[i], std::vector<std::string>{"ok"}) << "write " << i;
  }
  EXPECT_EQ(stats.writes, kTotal);
  EXPECT_EQ(stats.failedWrites, 0u);
  EXPECT_LT(stats.commits, stats.writes) << "no batching happened";
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.commitLatency.count(), stats.commits + 1);  // + the CREATE TABLE
  std::cout << "[ figures  ] " << stats.writes << " writes in " << stats.commits
            << " commits (group-commit factor "
            << static_cast<double>(stats.writes) / static_cast<double>(stats.commits)
            << "); commit latency p50 " << stats.commitLatency.p50() << " us, p99 "
            << stats.commitLatency.p99() << " us, max " << stats.maxCommitMicros << " us\n";

  auto reopened = Store::open(optionsIn(dir));
  std::vector<std::int64_t> ids = itemIds(*reopened);
  ASSERT_EQ(ids.size(), kTotal);
  for (std::size_t i = 0; i < kTotal; ++i) EXPECT_EQ(ids[i], static_cast<std::int64_t>(i));
}

// Closed loop: each caller waits for its write before sending the next, as a
// session acking "sent" would. Prints how many callers one fsync served.
TEST(StoreWrite, WaitingCallersShareCommits) {
  constexpr int kThreads = 4;
  constexpr int kWritesPerThread = 100;
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  StoreStats before = store->stats();
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kWritesPerThread; ++i) {
        store->writeAndWait(insertItem(t * kWritesPerThread + i));
      }
    });
  }
  for (auto& writer : writers) writer.join();
  StoreStats after = store->stats();
  std::uint64_t writes = after.writes - before.writes;
  std::uint64_t commits = after.commits - before.commits;
  EXPECT_EQ(writes, static_cast<std::uint64_t>(kThreads * kWritesPerThread));
  EXPECT_EQ(itemIds(*store).size(), static_cast<std::size_t>(kThreads * kWritesPerThread));
  // Four callers each waiting on their own write: some commits must carry more than one.
  EXPECT_GT(commits, 0u);
  EXPECT_LT(commits, writes) << "every write paid its own commit: no group commit happened";
  std::cout << "[ figures  ] closed loop, " << kThreads << " waiting callers: " << writes
            << " writes in " << commits << " commits (group-commit factor "
            << static_cast<double>(writes) / static_cast<double>(commits) << ")\n";
}

TEST(StoreWrite, ThrowingWriteFailsAloneAndIsRolledBack) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  Outcomes outcomes;
  StoreStats before = store->stats();
  {
    BlockedWriter blocked(*store);
    store->write(insertItem(1), outcomes.doneFor(0));
    store->write(
        [](Connection& connection) {
          insertItem(99)(connection);  // must not survive the throw
          throw std::runtime_error("refused by policy");
        },
        outcomes.doneFor(1));
    store->write(insertItem(2), outcomes.doneFor(2));
    blocked.release();
    EXPECT_EQ(blocked.outcome(), std::nullopt);
  }
  store->flush();
  auto seen = outcomes.snapshot();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], std::vector<std::string>{"ok"});
  EXPECT_EQ(seen[1], std::vector<std::string>{"refused by policy"});
  EXPECT_EQ(seen[2], std::vector<std::string>{"ok"});
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{1, 2}));
  StoreStats after = store->stats();
  // The blocked write's batch, then one batch holding all three.
  EXPECT_EQ(after.commits - before.commits, 2u);
  EXPECT_EQ(after.writes - before.writes, 4u);
  EXPECT_EQ(after.failedWrites - before.failedWrites, 1u);
}

TEST(StoreWrite, ConstraintViolationFailsAloneWithSqliteMessage) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  store->writeAndWait(insertItem(1));
  Outcomes outcomes;
  {
    BlockedWriter blocked(*store);
    store->write(insertItem(2), outcomes.doneFor(0));
    store->write(insertItem(1), outcomes.doneFor(1));  // duplicate primary key
    store->write(insertItem(3), outcomes.doneFor(2));
  }
  store->flush();
  auto seen = outcomes.snapshot();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], std::vector<std::string>{"ok"});
  ASSERT_EQ(seen[1].size(), 1u);
  EXPECT_NE(seen[1][0].find("UNIQUE constraint failed: items.id"), std::string::npos) << seen[1][0];
  EXPECT_NE(seen[1][0].find("INSERT INTO items"), std::string::npos) << seen[1][0];
  EXPECT_EQ(seen[2], std::vector<std::string>{"ok"});
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{1, 2, 3}));
}

TEST(StoreWrite, BatchesAreCappedAtMaxBatch) {
  TempDir dir;
  StoreOptions options = optionsIn(dir);
  options.maxBatch = 10;
  auto store = Store::open(options);
  createItems(*store);
  StoreStats before = store->stats();
  {
    BlockedWriter blocked(*store);
    for (int i = 0; i < 35; ++i) store->write(insertItem(i), nullptr);
    EXPECT_EQ(store->stats().queued, 35u);
  }
  store->flush();
  StoreStats after = store->stats();
  EXPECT_EQ(after.commits - before.commits, 1u + 4u);  // blocked, then 10 + 10 + 10 + 5
  EXPECT_EQ(itemIds(*store).size(), 35u);
}

TEST(StoreWrite, DestructorCommitsEveryPendingWrite) {
  constexpr std::size_t kWrites = 5000;
  TempDir dir;
  Outcomes outcomes;
  {
    auto store = Store::open(optionsIn(dir));
    createItems(*store);
    for (std::size_t i = 0; i < kWrites; ++i) {
      store->write(insertItem(static_cast<std::int64_t>(i)), outcomes.doneFor(i));
    }
  }  // destroyed with most writes still queued
  auto seen = outcomes.snapshot();
  ASSERT_EQ(seen.size(), kWrites);
  for (std::size_t i = 0; i < kWrites; ++i) {
    ASSERT_EQ(seen[i], std::vector<std::string>{"ok"}) << "write " << i;
  }
  auto reopened = Store::open(optionsIn(dir));
  EXPECT_EQ(itemIds(*reopened).size(), kWrites);
}

TEST(StoreWrite, FlushWaitsForEveryEarlierWrite) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  std::atomic<int> done{0};
  for (int i = 0; i < 300; ++i) {
    store->write(insertItem(i), [&done](std::optional<std::string> error) {
      if (!error) done.fetch_add(1);
    });
  }
  store->flush();
  EXPECT_EQ(done.load(), 300);
  EXPECT_EQ(itemIds(*store).size(), 300u);
  EXPECT_EQ(store->stats().queued, 0u);
  store->flush();  // nothing queued: returns at once
}

TEST(StoreWrite, WriteAndWaitIsVisibleOnReturnAndThrowsOnFailure) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  store->writeAndWait(insertItem(7));
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{7}));
  try {
    store->writeAndWait(insertItem(7));
    FAIL() << "duplicate insert succeeded";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("UNIQUE constraint failed"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(store->writeAndWait([](Connection&) { throw std::runtime_error("no"); }),
               StoreError);
  EXPECT_EQ(store->stats().failedWrites, 2u);
}

TEST(StoreWrite, WaitingFromTheWriterThreadIsRefused) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  std::string flushError;
  std::string writeAndWaitError;
  store->writeAndWait([&](Connection&) {
    try {
      store->flush();
    } catch (const StoreError& e) {
      flushError = e.what();
    }
    try {
      store->writeAndWait([](Connection&) {});
    } catch (const StoreError& e) {
      writeAndWaitError = e.what();
    }
  });
  EXPECT_NE(flushError.find("writer thread"), std::string::npos) << flushError;
  EXPECT_NE(writeAndWaitError.find("writer thread"), std::string::npos) << writeAndWaitError;
  store->flush();  // the refused writeAndWait queued nothing that could hang
}

TEST(StoreWrite, ThrowingDoneCallbackDoesNotStopTheWriter) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  store->write(insertItem(1), [](std::optional<std::string>) { throw std::logic_error("bad"); });
  store->writeAndWait(insertItem(2));
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{1, 2}));
}

// ---------------------------------------------------------------- joinable writes

// A joinable write's state in these tests: values to append to `log`.
struct LogEntries {
  std::vector<std::int64_t> values;
};
// Another kind of joinable write: never joined by LogEntries' joiners.
struct OtherEntries {
  std::vector<std::int64_t> values;
};

void createLog(Store& store) {
  store.writeAndWait([](Connection& connection) {
    connection.exec("CREATE TABLE log(seq INTEGER PRIMARY KEY AUTOINCREMENT, value INTEGER)");
  });
}

Store::WriteFn appendAll(std::shared_ptr<LogEntries> entries) {
  return [entries](Connection& connection) {
    for (std::int64_t value : entries->values) {
      connection.prepare("INSERT INTO log(value) VALUES (?1)").bind(1, value).run();
    }
  };
}

// The log's values in commit order.
std::vector<std::int64_t> logValues(Store& store) {
  std::vector<std::int64_t> values;
  store.read([&](Connection& connection) {
    auto query = connection.prepare("SELECT value FROM log ORDER BY seq");
    while (query.step()) values.push_back(query.columnInt(0));
  });
  return values;
}

auto joinWith(std::int64_t value) {
  return [value](LogEntries& entries) {
    entries.values.push_back(value);
    return true;
  };
}

TEST(StoreWrite, ALaterItemJoinsOnlyTheWriteQueuedLastAndKeepsTheQueueOrder) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createLog(*store);
  Outcomes outcomes;
  StoreStats before = store->stats();
  {
    BlockedWriter blocked(*store);
    auto first = std::make_shared<LogEntries>(LogEntries{{1}});
    store->writeJoinable(first, appendAll(first), outcomes.doneFor(0));
    EXPECT_TRUE(store->joinLast<LogEntries>(joinWith(2)));
    // Another kind of write is last now: joining it would commit 99 before 3.
    store->write(
        [](Connection& connection) { connection.exec("INSERT INTO log(value) VALUES (3)"); },
        outcomes.doneFor(1));
    EXPECT_FALSE(store->joinLast<LogEntries>(joinWith(99)));
    auto second = std::make_shared<LogEntries>(LogEntries{{4}});
    store->writeJoinable(second, appendAll(second), outcomes.doneFor(2));
    EXPECT_TRUE(store->joinLast<LogEntries>(joinWith(5)));
    // A joinable write of another state type is not this one's to join.
    EXPECT_FALSE(store->joinLast<OtherEntries>([](OtherEntries&) { return true; }));
    // A joiner may decline (a full write): nothing is added.
    EXPECT_FALSE(store->joinLast<LogEntries>([](LogEntries&) { return false; }));
  }
  store->flush();
  auto seen = outcomes.snapshot();
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& outcome : seen) EXPECT_EQ(outcome, std::vector<std::string>{"ok"});
  EXPECT_EQ(logValues(*store), (std::vector<std::int64_t>{1, 2, 3, 4, 5}));
  // The blocked write, then three: a joined item is no write of its own.
  EXPECT_EQ(store->stats().writes - before.writes, 4u);
}

TEST(StoreWrite, NothingJoinsAWriteTheWriterHasTaken) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createLog(*store);
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto entries = std::make_shared<LogEntries>(LogEntries{{1}});
  Outcomes outcomes;
  store->writeJoinable(
      entries,
      [&started, released, write = appendAll(entries)](Connection& connection) {
        started.set_value();
        if (released.wait_for(kHangGuard) != std::future_status::ready) {
          throw std::runtime_error("never released");
        }
        write(connection);
      },
      outcomes.doneFor(0));
  started.get_future().wait();
  // Running now: an item joining it could be missed by its loop, or commit
  // after writes queued behind it.
  EXPECT_FALSE(store->joinLast<LogEntries>(joinWith(2)));
  release.set_value();
  store->flush();
  EXPECT_EQ(outcomes.snapshot(), (std::vector<std::vector<std::string>>{{"ok"}}));
  EXPECT_EQ(logValues(*store), (std::vector<std::int64_t>{1}));
}

// ---------------------------------------------------------------- items alone

TEST(WriteEachAlone, AFailingItemFailsAloneWithSqlitesMessageAndTheOthersCommit) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  store->writeAndWait(insertItem(1));
  const std::vector<std::int64_t> ids{10, 11, 1, 12};  // 1 is taken
  int allRuns = 0;
  std::vector<int> oneRuns(ids.size(), 0);
  std::vector<std::optional<std::string>> failures;
  store->writeAndWait([&](Connection& connection) {
    failures = writeEachAlone(connection, ids.size(), [&](std::size_t first, std::size_t last) {
      if (last - first == ids.size()) {
        ++allRuns;
      } else {
        ASSERT_EQ(last, first + 1);
        ++oneRuns[first];
      }
      for (std::size_t i = first; i < last; ++i) insertItem(ids[i])(connection);
    });
  });
  ASSERT_EQ(failures.size(), ids.size());
  EXPECT_EQ(failures[0], std::nullopt);
  EXPECT_EQ(failures[1], std::nullopt);
  ASSERT_TRUE(failures[2].has_value());
  EXPECT_NE(failures[2]->find("UNIQUE constraint failed: items.id"), std::string::npos)
      << *failures[2];
  EXPECT_EQ(failures[3], std::nullopt);
  // All at once first (undone: 10 and 11 are not there twice), then each alone.
  EXPECT_EQ(allRuns, 1);
  EXPECT_EQ(oneRuns, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{1, 10, 11, 12}));
}

TEST(WriteEachAlone, WhenNothingFailsEachItemRunsOnceInOneSavepoint) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  createItems(*store);
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  std::vector<std::optional<std::string>> failures;
  store->writeAndWait([&](Connection& connection) {
    failures = writeEachAlone(connection, 3, [&](std::size_t first, std::size_t last) {
      runs.emplace_back(first, last);
      for (std::size_t id = first + 1; id <= last; ++id) {
        insertItem(static_cast<std::int64_t>(id))(connection);
      }
    });
  });
  EXPECT_EQ(failures, (std::vector<std::optional<std::string>>(3)));
  EXPECT_EQ(runs, (std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}}));
  EXPECT_EQ(itemIds(*store), (std::vector<std::int64_t>{1, 2, 3}));
}

}  // namespace
}  // namespace switchboard::store
