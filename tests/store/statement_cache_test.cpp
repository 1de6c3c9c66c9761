// The per-connection statement cache: reuse, nesting, reset on give-back,
// no leaking bindings, its bound, schema changes, and what it saves.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/database_handle.h"
#include "store/statement_cache.h"
#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

constexpr auto kHangGuard = std::chrono::seconds(120);

std::unique_ptr<Store> openWithItems(const TempDir& dir, int rows) {
  StoreOptions options;
  options.dataDir = dir.path();
  auto store = Store::open(options);
  store->writeAndWait([rows](Connection& connection) {
    connection.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, note TEXT)");
    for (int id = 1; id <= rows; ++id) {
      connection.prepare("INSERT INTO items(id) VALUES (?1)").bind(1, std::int64_t{id}).run();
    }
  });
  return store;
}

constexpr std::string_view kFrom = "SELECT id FROM items WHERE id >= ?1 ORDER BY id";

TEST(StatementCache, SameTextPreparedAgainReusesTheCompiledStatement) {
  TempDir dir;
  auto store = openWithItems(dir, 3);
  StoreStats before = store->stats();

  sqlite3_stmt* first = nullptr;
  sqlite3_stmt* second = nullptr;
  store->writeAndWait([&](Connection& connection) {
    first = connection.prepare("UPDATE items SET note = ?2 WHERE id = ?1").raw();
    auto again = connection.prepare("UPDATE items SET note = ?2 WHERE id = ?1");
    second = again.raw();
    again.bind(1, std::int64_t{1}).bind(2, std::string_view("one")).run();
  });
  EXPECT_EQ(first, second);
  // The writer's connection lives on: a later write callback reuses it too.
  sqlite3_stmt* later = nullptr;
  store->writeAndWait([&](Connection& connection) {
    later = connection.prepare("UPDATE items SET note = ?2 WHERE id = ?1").raw();
  });
  EXPECT_EQ(later, first);

  // So does a pooled reader, taken again by the same thread.
  sqlite3_stmt* readFirst = nullptr;
  sqlite3_stmt* readSecond = nullptr;
  store->read([&](Connection& connection) { readFirst = connection.prepare(kFrom).raw(); });
  store->read([&](Connection& connection) { readSecond = connection.prepare(kFrom).raw(); });
  EXPECT_EQ(readFirst, readSecond);

  StoreStats after = store->stats();
  // Each of the two writes also borrows its SAVEPOINT and RELEASE statements,
  // compiled by the first write of all (in openWithItems): two more hits each.
  constexpr std::uint64_t kSavepointHits = 2 * 2;
  EXPECT_EQ(after.statementCacheHits - before.statementCacheHits, 3u + kSavepointHits);
  EXPECT_EQ(after.statementCacheMisses - before.statementCacheMisses, 2u);
}

TEST(StatementCache, NestedPreparesOfTheSameTextIterateIndependently) {
  TempDir dir;
  auto store = openWithItems(dir, 3);
  std::vector<std::int64_t> outerIds;
  std::vector<std::int64_t> innerIds;
  sqlite3_stmt* outerStmt = nullptr;
  sqlite3_stmt* innerStmt = nullptr;
  sqlite3_stmt* afterStmt = nullptr;
  store->read([&](Connection& connection) {
    auto outer = connection.prepare(kFrom).bind(1, std::int64_t{1});
    outerStmt = outer.raw();
    while (outer.step()) {
      outerIds.push_back(outer.columnInt(0));
      if (outerIds.size() == 1) {
        auto inner = connection.prepare(kFrom).bind(1, std::int64_t{3});
        innerStmt = inner.raw();
        while (inner.step()) innerIds.push_back(inner.columnInt(0));
      }
    }
  });
  store->read([&](Connection& connection) { afterStmt = connection.prepare(kFrom).raw(); });
  EXPECT_EQ(outerIds, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(innerIds, (std::vector<std::int64_t>{3}));
  EXPECT_NE(outerStmt, innerStmt);
  // The inner one was prepared on its own and finalized; the cache kept the outer.
  EXPECT_EQ(afterStmt, outerStmt);
}

TEST(StatementCache, AbandonedMidIterationIsResetForTheNextBorrower) {
  TempDir dir;
  auto store = openWithItems(dir, 3);
  store->read([&](Connection& connection) {
    auto query = connection.prepare(kFrom).bind(1, std::int64_t{1});
    ASSERT_TRUE(query.step());
    // Rows left: destroyed with the callback.
  });
  EXPECT_THROW(store->read([&](Connection& connection) {
    auto query = connection.prepare(kFrom).bind(1, std::int64_t{1});
    ASSERT_TRUE(query.step());
    ASSERT_TRUE(query.step());
    throw std::runtime_error("reader gives up mid-iteration");
  }),
               std::runtime_error);

  // Were the statement still mid-step, its read would pin the old snapshot of
  // the WAL and this row would stay invisible on that connection.
  store->writeAndWait([](Connection& connection) {
    connection.prepare("INSERT INTO items(id) VALUES (?1)").bind(1, std::int64_t{4}).run();
  });
  std::vector<std::int64_t> ids;
  store->read([&](Connection& connection) {
    auto query = connection.prepare(kFrom).bind(1, std::int64_t{1});
    while (query.step()) ids.push_back(query.columnInt(0));
  });
  EXPECT_EQ(ids, (std::vector<std::int64_t>{1, 2, 3, 4}));
}

TEST(StatementCache, BindingsDoNotLeakToTheNextBorrower) {
  TempDir dir;
  auto store = openWithItems(dir, 0);
  constexpr std::string_view kInsert = "INSERT INTO items(id, note) VALUES (?1, ?2)";
  store->writeAndWait([&](Connection& connection) {
    connection.prepare(kInsert).bind(1, std::int64_t{1}).bind(2, std::string_view("x")).run();
    // ?2 left unbound: NULL, not the "x" of the previous borrower.
    connection.prepare(kInsert).bind(1, std::int64_t{2}).run();
    connection.prepare(kInsert).bind(1, std::int64_t{3}).bind(2, std::string_view("y")).run();
    connection.prepare(kInsert).bind(1, std::int64_t{4}).bindNull(2).run();
  });
  std::vector<std::optional<std::string>> notes;
  store->read([&](Connection& connection) {
    auto query = connection.prepare("SELECT note FROM items ORDER BY id");
    while (query.step()) {
      notes.push_back(query.columnIsNull(0) ? std::nullopt
                                            : std::optional<std::string>(query.columnText(0)));
    }
  });
  EXPECT_EQ(notes, (std::vector<std::optional<std::string>>{"x", std::nullopt, "y", std::nullopt}));
}

TEST(StatementCache, AFailedStepLeavesTheCachedStatementUsable) {
  TempDir dir;
  auto store = openWithItems(dir, 1);
  constexpr std::string_view kInsert = "INSERT INTO items(id) VALUES (?1)";
  EXPECT_THROW(store->writeAndWait([&](Connection& connection) {
    connection.prepare(kInsert).bind(1, std::int64_t{1}).run();  // duplicate key
  }),
               StoreError);
  store->writeAndWait(
      [&](Connection& connection) { connection.prepare(kInsert).bind(1, std::int64_t{2}).run(); });
  std::int64_t count = -1;
  store->read([&](Connection& connection) {
    auto query = connection.prepare("SELECT count(*) FROM items");
    if (query.step()) count = query.columnInt(0);
  });
  EXPECT_EQ(count, 2);
}

TEST(StatementCache, CachedStatementsFollowSchemaChanges) {
  TempDir dir;
  auto store = openWithItems(dir, 1);
  constexpr std::string_view kAll = "SELECT * FROM items ORDER BY id";
  auto columns = [&] {
    int count = -1;
    store->read([&](Connection& connection) {
      auto query = connection.prepare(kAll);
      if (query.step()) count = sqlite3_column_count(query.raw());
    });
    return count;
  };
  EXPECT_EQ(columns(), 2);
  store->writeAndWait([&](Connection& connection) {
    auto query = connection.prepare(kAll);
    ASSERT_TRUE(query.step());
    EXPECT_EQ(sqlite3_column_count(query.raw()), 2);
  });
  store->writeAndWait([](Connection& connection) {
    connection.exec("ALTER TABLE items ADD COLUMN extra INTEGER NOT NULL DEFAULT 7");
  });
  EXPECT_EQ(columns(), 3);
  store->writeAndWait([&](Connection& connection) {
    auto query = connection.prepare(kAll);
    ASSERT_TRUE(query.step());
    EXPECT_EQ(query.columnInt(2), 7);
  });
}

TEST(StatementCache, HoldsAtMostItsBoundAndStillServesEveryText) {
  TempDir dir;
  StatementCacheCounters counters;
  CachedDatabase db(openDatabase(dir.path() / "bound.db", AccessMode::kReadWrite), &counters);
  Connection connection(db.get(), &db.cache());
  constexpr std::size_t kTexts = StatementCache::kMaxEntries + 6;
  for (int round = 0; round < 2; ++round) {
    for (std::size_t i = 0; i < kTexts; ++i) {
      auto query = connection.prepare("SELECT " + std::to_string(i));
      ASSERT_TRUE(query.step());
      EXPECT_EQ(query.columnInt(0), static_cast<std::int64_t>(i));
    }
  }
  EXPECT_EQ(db.cache().size(), StatementCache::kMaxEntries);
  EXPECT_EQ(counters.hits.load(), StatementCache::kMaxEntries);
  EXPECT_EQ(counters.misses.load(), kTexts + (kTexts - StatementCache::kMaxEntries));
}

TEST(StatementCache, ATextThatDoesNotCompileIsNotCached) {
  TempDir dir;
  StatementCacheCounters counters;
  CachedDatabase db(openDatabase(dir.path() / "bad.db", AccessMode::kReadWrite), &counters);
  Connection connection(db.get(), &db.cache());
  EXPECT_THROW(connection.prepare("SELECT * FROM missing"), StoreError);
  EXPECT_THROW(connection.prepare("SELECT 1; SELECT 2"), StoreError);
  EXPECT_EQ(db.cache().size(), 0u);
  connection.exec("CREATE TABLE missing(x)");
  auto query = connection.prepare("SELECT * FROM missing");
  EXPECT_FALSE(query.step());
}

// Prints, never asserts on time: 20,000 write() calls of one INSERT with done,
// through the cache and, for comparison, with the statement compiled per write
// (an uncached Connection over the same writer connection, as before the cache).
TEST(StatementCache, PrintsWriteCostCachedAndUncached) {
  constexpr int kWrites = 20'000;
  auto timeWrites = [&](bool cached) {
    TempDir dir;
    auto store = openWithItems(dir, 0);
    auto allDone = std::make_shared<std::promise<void>>();
    auto finished = allDone->get_future();
    auto remaining = std::make_shared<std::atomic<int>>(kWrites);
    auto failures = std::make_shared<std::atomic<int>>(0);
    auto started = std::chrono::steady_clock::now();
    for (int i = 1; i <= kWrites; ++i) {
      store->write(
          [i, cached](Connection& connection) {
            Connection uncached(connection.raw());
            Connection& use = cached ? connection : uncached;
            use.prepare("INSERT INTO items(id, note) VALUES (?1, ?2)")
                .bind(1, std::int64_t{i})
                .bind(2, std::string_view("a message body of some length"))
                .run();
          },
          [allDone, remaining, failures](std::optional<std::string> error) {
            if (error) failures->fetch_add(1);
            if (remaining->fetch_sub(1) == 1) allDone->set_value();
          });
    }
    EXPECT_EQ(finished.wait_for(kHangGuard), std::future_status::ready);
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
    EXPECT_EQ(failures->load(), 0);
    std::int64_t count = -1;
    store->read([&](Connection& connection) {
      auto query = connection.prepare("SELECT count(*) FROM items");
      if (query.step()) count = query.columnInt(0);
    });
    EXPECT_EQ(count, kWrites);
    StoreStats stats = store->stats();
    std::cout << (cached ? "cached:   " : "uncached: ") << kWrites << " writes in " << micros / 1000
              << " ms (" << micros * 1000 / kWrites << " ns/write), " << stats.commits
              << " commits, cache hits " << stats.statementCacheHits << ", misses "
              << stats.statementCacheMisses << "\n";
  };
  timeWrites(false);
  timeWrites(true);
}

}  // namespace
}  // namespace switchboard::store
