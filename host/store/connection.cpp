#include <sqlite3.h>

#include <string>

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

}  // namespace switchboard::store
