// Opening one SQLite connection to the store's file, configured the way the
// store needs it (WAL, synchronous=FULL, foreign keys, busy timeout).
#pragma once

#include <filesystem>
#include <memory>

struct sqlite3;

namespace switchboard::store {

struct DatabaseCloser {
  void operator()(sqlite3* db) const;
};

// Owns one connection; closing it finalizes nothing: every Statement made on it
// must be gone first (Statement lives only inside a read or write callback),
// and so must its StatementCache (CachedDatabase orders that).
using DatabaseHandle = std::unique_ptr<sqlite3, DatabaseCloser>;

enum class AccessMode { kReadWrite, kReadOnly };

// How long a connection waits on a lock held by another process or connection
// before failing with SQLITE_BUSY.
inline constexpr int kBusyTimeoutMillis = 5000;

// Opens (and for kReadWrite creates) the database at `file`, applies the
// pragmas and, for kReadWrite, switches the file to WAL. Throws StoreError
// "cannot open database <file>: <reason>".
DatabaseHandle openDatabase(const std::filesystem::path& file, AccessMode mode);

}  // namespace switchboard::store
