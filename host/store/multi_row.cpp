#include "store/multi_row.h"

#include <string>

namespace switchboard::store {

namespace {

// The largest chunk size that fits in `left` rows (left > 0).
std::size_t chunkFor(std::size_t left) {
  for (std::size_t size : kRowChunks) {
    if (size <= left) return size;
  }
  return 1;
}

// "(?, ?), (?, ?)" for `rows` rows of `columns` values.
std::string placeholders(std::size_t rows, int columns) {
  std::string row = "(?";
  for (int c = 1; c < columns; ++c) row += ", ?";
  row += ')';
  std::string all;
  all.reserve(rows * (row.size() + 2));
  for (std::size_t r = 0; r < rows; ++r) {
    if (r > 0) all += ", ";
    all += row;
  }
  return all;
}

}  // namespace

void insertRows(Connection& db, std::string_view head, int columns, std::size_t count,
                const std::function<void(Statement&, int firstIndex, std::size_t row)>& bind,
                const std::function<void(std::size_t row, std::int64_t rowid)>& inserted) {
  for (std::size_t first = 0; first < count;) {
    std::size_t rows = chunkFor(count - first);
    std::string sql(head);
    sql += " VALUES ";
    sql += placeholders(rows, columns);
    auto insert = db.prepare(sql);
    for (std::size_t r = 0; r < rows; ++r) {
      bind(insert, static_cast<int>(r) * columns + 1, first + r);
    }
    insert.run();
    if (inserted) {
      std::int64_t last = db.lastInsertRowid();
      for (std::size_t r = 0; r < rows; ++r) {
        inserted(first + r, last - static_cast<std::int64_t>(rows - 1 - r));
      }
    }
    first += rows;
  }
}

std::int64_t deleteRows(Connection& db, std::string_view table, std::string_view key,
                        std::span<const std::int64_t> keys) {
  std::int64_t deleted = 0;
  for (std::size_t first = 0; first < keys.size();) {
    std::size_t rows = chunkFor(keys.size() - first);
    std::string sql = "DELETE FROM ";
    sql += table;
    sql += " WHERE ";
    sql += key;
    sql += " IN (?";
    for (std::size_t r = 1; r < rows; ++r) sql += ", ?";
    sql += ')';
    auto erase = db.prepare(sql);
    for (std::size_t r = 0; r < rows; ++r) erase.bind(static_cast<int>(r) + 1, keys[first + r]);
    erase.run();
    deleted += db.changes();
    first += rows;
  }
  return deleted;
}

std::int64_t deleteOldestRows(Connection& db, std::string_view table, std::string_view rowid,
                              std::string_view time, std::int64_t horizon) {
  std::string t(table);
  std::string r(rowid);
  // The first row still young, else one past the last row: everything before it goes.
  std::string sql = "DELETE FROM " + t + " WHERE " + r + " < coalesce((SELECT " + r + " FROM " + t +
                    " WHERE " + std::string(time) + " > ?1 ORDER BY " + r +
                    " LIMIT 1), (SELECT max(" + r + ") FROM " + t + ") + 1)";
  db.prepare(sql).bind(1, horizon).run();
  return db.changes();
}

}  // namespace switchboard::store
