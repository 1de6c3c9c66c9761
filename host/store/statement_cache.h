// Prepared statements kept per connection, so the same SQL text is compiled
// once per connection rather than once per callback.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/database_handle.h"

struct sqlite3;
struct sqlite3_stmt;

namespace switchboard::store {

// Store-wide counts of statement cache use; read by Store::stats() from any
// thread while connections update them, hence atomics.
struct StatementCacheCounters {
  std::atomic<std::uint64_t> hits{0};    // a cached statement was lent
  std::atomic<std::uint64_t> misses{0};  // the text had to be compiled
  // SQLite virtual-machine steps run by lent statements: the work a statement
  // did, independent of timing (sqlite3_stmt_status SQLITE_STMTSTATUS_VM_STEP).
  std::atomic<std::uint64_t> vmSteps{0};
};

// One cached statement. `lent` is true while a Statement holds it; a second
// prepare of the same text then gets a fresh, uncached statement.
struct CachedStatement {
  sqlite3_stmt* stmt = nullptr;
  bool lent = false;
  StatementCacheCounters* counters = nullptr;  // where its VM steps are counted
};

// The prepared statements of one connection, keyed by their exact SQL text.
// Owns every sqlite3_stmt in it and finalizes them when destroyed, which must
// happen before the connection closes (CachedDatabase orders that) and after
// every Statement borrowed from it is gone. Holds at most kMaxEntries texts;
// once full, new texts are prepared uncached. Used by one thread at a time,
// like its connection (the writer, or the reader that borrowed it).
// Statements are prepared with SQLITE_PREPARE_PERSISTENT; SQLite re-prepares
// them by itself when the schema changes, so a cached statement never goes
// stale.
class StatementCache {
 public:
  static constexpr std::size_t kMaxEntries = 128;

  // `counters` (may be null) must outlive the cache.
  StatementCache(sqlite3* db, StatementCacheCounters* counters);
  ~StatementCache();
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // Lends the cached statement for `sql`, preparing and caching it on first
  // use. Returns null when the text is already lent or the cache is full: the
  // caller prepares its own statement then. Throws StoreError if `sql` does not
  // compile or holds more than one statement.
  CachedStatement* lend(std::string_view sql);

  std::size_t size() const { return entries_.size(); }

 private:
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const {
      return std::hash<std::string_view>{}(text);
    }
  };

  sqlite3* db_;
  StatementCacheCounters* counters_;
  // Node-based: a CachedStatement* stays valid while other texts are added.
  std::unordered_map<std::string, CachedStatement, TextHash, std::equal_to<>> entries_;
};

// A connection together with its statement cache. The cache is declared after
// the handle, so it is finalized before the connection closes.
// Neither copied nor moved: Connection keeps a pointer to the cache, so it is
// held by unique_ptr where it must travel (the reader pool).
class CachedDatabase {
 public:
  CachedDatabase(DatabaseHandle db, StatementCacheCounters* counters)
      : db_(std::move(db)), cache_(db_.get(), counters) {}
  CachedDatabase(const CachedDatabase&) = delete;
  CachedDatabase& operator=(const CachedDatabase&) = delete;

  sqlite3* get() const { return db_.get(); }
  StatementCache& cache() { return cache_; }

 private:
  DatabaseHandle db_;
  StatementCache cache_;
};

// Compiles `sql` (one statement, trailing whitespace allowed) on `db` with
// `flags` for sqlite3_prepare_v3. Throws StoreError; never returns null.
sqlite3_stmt* prepareOne(sqlite3* db, std::string_view sql, unsigned int flags);

}  // namespace switchboard::store
