// Statements over many rows (store/multi_row.h): every row is written once, in
// order, whatever the count (chunks of each size and a remainder), each learns
// its AUTOINCREMENT rowid (also after the table's largest row was deleted), a
// failing row fails with SQLite's message, deletes take exactly their keys, and
// the oldest rows go up to the first young one.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "store/multi_row.h"
#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

std::unique_ptr<Store> openWithRows(const TempDir& dir) {
  StoreOptions options;
  options.dataDir = dir.path();
  auto store = Store::open(options);
  store->writeAndWait([](Connection& db) {
    db.exec(
        "CREATE TABLE rows(seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
        "n INTEGER NOT NULL)");
  });
  return store;
}

// Inserts rows named prefix0, prefix1, ... with n = their index; returns the
// rowid each was told.
std::vector<std::int64_t> insertNamed(Store& store, const std::string& prefix, std::size_t count) {
  std::vector<std::int64_t> rowids(count, 0);
  store.writeAndWait([&](Connection& db) {
    insertRows(
        db, "INSERT INTO rows(name, n)", 2, count,
        [&](Statement& insert, int at, std::size_t row) {
          insert.bind(at, prefix + std::to_string(row))
              .bind(at + 1, static_cast<std::int64_t>(row));
        },
        [&](std::size_t row, std::int64_t rowid) { rowids[row] = rowid; });
  });
  return rowids;
}

struct Row {
  std::int64_t seq;
  std::string name;
  std::int64_t n;
  bool operator==(const Row&) const = default;
};

std::vector<Row> rowsOf(Store& store) {
  std::vector<Row> rows;
  store.read([&](Connection& db) {
    auto query = db.prepare("SELECT seq, name, n FROM rows ORDER BY seq");
    while (query.step())
      rows.push_back({query.columnInt(0), query.columnText(1), query.columnInt(2)});
  });
  return rows;
}

TEST(MultiRow, EveryCountInsertsEachRowOnceInOrderAndTellsItsRowid) {
  TempDir dir;
  auto store = openWithRows(dir);
  // 64 + 16 + 4 + 1 + 1 + ... : every chunk size and a remainder of each.
  for (std::size_t count : {0, 1, 3, 4, 17, 64, 150}) {
    SCOPED_TRACE(count);
    std::string prefix = "c" + std::to_string(count) + "-";
    auto before = rowsOf(*store);
    std::vector<std::int64_t> rowids = insertNamed(*store, prefix, count);
    auto after = rowsOf(*store);
    ASSERT_EQ(after.size(), before.size() + count);
    for (std::size_t i = 0; i < count; ++i) {
      const Row& row = after[before.size() + i];
      EXPECT_EQ(row, (Row{rowids[i], prefix + std::to_string(i), static_cast<std::int64_t>(i)}));
    }
  }
}

TEST(MultiRow, RowidsAfterTheLargestRowWasDeletedAreNewOnes) {
  TempDir dir;
  auto store = openWithRows(dir);
  std::vector<std::int64_t> first = insertNamed(*store, "a", 70);
  ASSERT_EQ(first.size(), 70u);
  store->writeAndWait([&](Connection& db) {
    std::vector<std::int64_t> last{first.back(), first[first.size() - 2]};
    EXPECT_EQ(deleteRows(db, "rows", "seq", last), 2);
  });
  std::vector<std::int64_t> second = insertNamed(*store, "b", 21);
  ASSERT_EQ(second.size(), 21u);
  EXPECT_EQ(second.front(), first.back() + 1);
  auto rows = rowsOf(*store);
  ASSERT_EQ(rows.size(), 68u + 21u);
  for (std::size_t i = 0; i < second.size(); ++i) {
    EXPECT_EQ(rows[68 + i],
              (Row{second[i], "b" + std::to_string(i), static_cast<std::int64_t>(i)}));
  }
}

TEST(MultiRow, AFailingRowFailsItsStatementWithSqlitesMessage) {
  TempDir dir;
  auto store = openWithRows(dir);
  insertNamed(*store, "x", 1);  // "x0" is taken
  std::optional<std::string> failure;
  store->write(
      [&](Connection& db) {
        insertRows(db, "INSERT INTO rows(name, n)", 2, 5,
                   [&](Statement& insert, int at, std::size_t row) {
                     insert.bind(at, row == 3 ? std::string("x0") : "y" + std::to_string(row))
                         .bind(at + 1, std::int64_t{0});
                   });
      },
      [&](std::optional<std::string> error) { failure = std::move(error); });
  store->flush();
  ASSERT_TRUE(failure.has_value());
  EXPECT_NE(failure->find("UNIQUE constraint failed: rows.name"), std::string::npos) << *failure;
  ASSERT_EQ(rowsOf(*store).size(), 1u);  // the write was undone as a whole
}

TEST(MultiRow, DeleteTakesExactlyItsKeysAndCountsThoseThatWereThere) {
  TempDir dir;
  auto store = openWithRows(dir);
  std::vector<std::int64_t> seqs = insertNamed(*store, "d", 100);
  std::vector<std::int64_t> doomed;
  for (std::size_t i = 0; i < seqs.size(); i += 3) doomed.push_back(seqs[i]);  // 34 rows
  doomed.push_back(seqs.back() + 1000);                                        // never there
  std::int64_t deleted = 0;
  store->writeAndWait([&](Connection& db) { deleted = deleteRows(db, "rows", "seq", doomed); });
  EXPECT_EQ(deleted, 34);
  auto rows = rowsOf(*store);
  ASSERT_EQ(rows.size(), 66u);
  for (const Row& row : rows) EXPECT_NE(row.n % 3, 0) << row.name;
}

TEST(MultiRow, TheOldestRowsGoUpToTheFirstYoungOneWhateverIsLeft) {
  TempDir dir;
  auto store = openWithRows(dir);
  // n is the row's time: 10, 20, ..., 100.
  store->writeAndWait([](Connection& db) {
    for (int i = 1; i <= 10; ++i) {
      db.prepare("INSERT INTO rows(name, n) VALUES (?, ?)")
          .bind(1, "t" + std::to_string(i))
          .bind(2, std::int64_t{i * 10})
          .run();
    }
  });
  auto sweep = [&](std::int64_t horizon) {
    std::int64_t deleted = -1;
    store->writeAndWait(
        [&](Connection& db) { deleted = deleteOldestRows(db, "rows", "seq", "n", horizon); });
    return deleted;
  };
  EXPECT_EQ(sweep(5), 0);   // nothing is that old
  EXPECT_EQ(sweep(30), 3);  // 10, 20, 30
  EXPECT_EQ(sweep(30), 0);  // again: nothing more
  EXPECT_EQ(sweep(75), 4);  // 40 .. 70
  auto left = rowsOf(*store);
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left.front().n, 80);
  EXPECT_EQ(sweep(1000), 3);  // every row old: all go
  EXPECT_TRUE(rowsOf(*store).empty());
  EXPECT_EQ(sweep(1000), 0);  // an empty table
}

}  // namespace
}  // namespace switchboard::store
