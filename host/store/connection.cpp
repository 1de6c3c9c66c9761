#include <sqlite3.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "store/sqlite_error.h"
#include "store/store.h"

namespace switchboard::store {

void Connection::exec(std::string_view sqlView) {
  // sqlite3_exec needs a terminated string.
  std::string sql(sqlView);
  char* message = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return;
  std::string text = message != nullptr ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  throwSqlError(text, sql);
}

std::int64_t Connection::lastInsertRowid() const {
  return sqlite3_last_insert_rowid(db_);
}

int Connection::changes() const {
  return sqlite3_changes(db_);
}

bool Connection::inTransaction() const {
  return sqlite3_get_autocommit(db_) == 0;
}

// ------------------------------------------------------- items in one write

namespace {

// The message of what `run` threw, or nullopt. Rethrows when the transaction
// is gone: nothing after that can be kept.
std::optional<std::string> failureOf(Connection& db, const std::function<void()>& run) {
  try {
    run();
    return std::nullopt;
  } catch (const std::exception& e) {
    if (!db.inTransaction()) throw;
    std::string message = e.what();
    return message.empty() ? std::string("write failed with an empty message") : message;
  }
}

// A savepoint's three statements, as constant texts for the statement cache.
struct SavepointSql {
  std::string_view begin;
  std::string_view release;
  std::string_view undo;
};
constexpr SavepointSql kAllItems{"SAVEPOINT items", "RELEASE items", "ROLLBACK TO items"};
constexpr SavepointSql kOneItem{"SAVEPOINT item", "RELEASE item", "ROLLBACK TO item"};

// Runs `run` in a savepoint: kept if it returns, undone if it throws.
// Returns what it threw.
std::optional<std::string> inSavepoint(Connection& db, const SavepointSql& savepoint,
                                       const std::function<void()>& run) {
  db.prepare(savepoint.begin).run();
  auto failure = failureOf(db, [&] {
    run();
    db.prepare(savepoint.release).run();
  });
  if (failure) {
    db.prepare(savepoint.undo).run();
    db.prepare(savepoint.release).run();
  }
  return failure;
}

}  // namespace

std::vector<std::optional<std::string>> writeEachAlone(
    Connection& db, std::size_t count,
    const std::function<void(std::size_t first, std::size_t last)>& write) {
  std::vector<std::optional<std::string>> failures(count);
  if (!inSavepoint(db, kAllItems, [&] { write(0, count); })) return failures;
  for (std::size_t i = 0; i < count; ++i) {
    failures[i] = inSavepoint(db, kOneItem, [&] { write(i, i + 1); });
  }
  return failures;
}

}  // namespace switchboard::store
