#include "store/statement_cache.h"

#include <sqlite3.h>

namespace switchboard::store {

StatementCache::StatementCache(sqlite3* db, StatementCacheCounters* counters)
    : db_(db), counters_(counters) {}

StatementCache::~StatementCache() {
  for (auto& [text, entry] : entries_) sqlite3_finalize(entry.stmt);
}

CachedStatement* StatementCache::lend(std::string_view sql) {
  auto found = entries_.find(sql);
  if (found != entries_.end()) {
    if (found->second.lent) {
      if (counters_ != nullptr) counters_->misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    if (counters_ != nullptr) counters_->hits.fetch_add(1, std::memory_order_relaxed);
    found->second.lent = true;
    return &found->second;
  }
  if (counters_ != nullptr) counters_->misses.fetch_add(1, std::memory_order_relaxed);
  if (entries_.size() >= kMaxEntries) return nullptr;
  // Prepared before inserting, so a text that does not compile is not cached.
  sqlite3_stmt* stmt = prepareOne(db_, sql, SQLITE_PREPARE_PERSISTENT);
  try {
    auto inserted =
        entries_.emplace(std::string(sql), CachedStatement{stmt, true, counters_}).first;
    return &inserted->second;
  } catch (...) {
    sqlite3_finalize(stmt);
    throw;
  }
}

}  // namespace switchboard::store
