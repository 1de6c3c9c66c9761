#include "store/database_handle.h"

#include <sqlite3.h>

#include <string>

#include "store/store.h"

namespace switchboard::store {

void DatabaseCloser::operator()(sqlite3* db) const {
  sqlite3_close_v2(db);
}

namespace {

[[noreturn]] void failOpen(const std::filesystem::path& file, std::string_view reason) {
  throw StoreError("cannot open database " + file.string() + ": " + std::string(reason));
}

// Runs a pragma and returns the first column of its first row ("" if none).
// Errors name the file, not the pragma: a pragma is where SQLite first reads
// the file, so "file is not a database" surfaces here.
std::string pragma(sqlite3* db, const std::filesystem::path& file, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    failOpen(file, sqlite3_errmsg(db));
  }
  std::string value;
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    if (text != nullptr) value = reinterpret_cast<const char*>(text);
    rc = SQLITE_DONE;
  }
  if (rc != SQLITE_DONE) {
    std::string message = sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    failOpen(file, message);
  }
  sqlite3_finalize(stmt);
  return value;
}

}  // namespace

DatabaseHandle openDatabase(const std::filesystem::path& file, AccessMode mode) {
  // Before SQLite's first use in the process: no allocation statistics, which
  // cost every sqlite3_malloc a global mutex (the store never reads them).
  // SQLITE_MISUSE when something else used SQLite first; it then keeps them.
  static const int memoryStatisticsOff = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)memoryStatisticsOff;
  // NOMUTEX: a connection is used by one thread at a time (the writer, or the
  // reader that took it from the pool), so SQLite's own locking is redundant.
  int flags = SQLITE_OPEN_NOMUTEX;
  flags |= mode == AccessMode::kReadWrite ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                          : SQLITE_OPEN_READONLY;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(file.c_str(), &raw, flags, nullptr);
  DatabaseHandle db(raw);
  if (rc != SQLITE_OK) {
    failOpen(file, db ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  if (sqlite3_busy_timeout(db.get(), kBusyTimeoutMillis) != SQLITE_OK) {
    failOpen(file, sqlite3_errmsg(db.get()));
  }
  if (mode == AccessMode::kReadWrite) {
    std::string journal = pragma(db.get(), file, "PRAGMA journal_mode=WAL");
    if (journal != "wal") {
      failOpen(file, "cannot switch to WAL journal mode (got '" + journal + "')");
    }
    pragma(db.get(), file, "PRAGMA synchronous=FULL");
    pragma(db.get(), file, "PRAGMA foreign_keys=ON");
    // Each write runs in a savepoint, whose sub-journal (the pages it first
    // changes) would otherwise spill to a temporary file: a pwrite per page.
    pragma(db.get(), file, "PRAGMA temp_store=MEMORY");
  } else {
    // Reads the schema now, so a corrupt or foreign file fails here too.
    pragma(db.get(), file, "PRAGMA user_version");
    pragma(db.get(), file, "PRAGMA query_only=ON");
  }
  return db;
}

}  // namespace switchboard::store
