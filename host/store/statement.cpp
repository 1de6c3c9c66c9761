#include <sqlite3.h>

#include <cctype>
#include <climits>

#include "store/sqlite_error.h"
#include "store/statement_cache.h"
#include "store/store.h"

namespace switchboard::store {

namespace {

bool onlyWhitespace(const char* begin, const char* end) {
  for (; begin != end; ++begin) {
    if (!std::isspace(static_cast<unsigned char>(*begin))) return false;
  }
  return true;
}

// sqlite3_bind_* with a null pointer binds NULL, but an empty string_view may
// carry one: an empty value must stay an empty value.
const char* nonNull(std::string_view bytes) {
  return bytes.data() != nullptr ? bytes.data() : "";
}

}  // namespace

sqlite3_stmt* prepareOne(sqlite3* db, std::string_view sql, unsigned int flags) {
  if (sql.size() > static_cast<std::size_t>(INT_MAX)) throwSqlError("statement too long", sql);
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v3(db, nonNull(sql), static_cast<int>(sql.size()), flags, &stmt, &tail);
  if (rc != SQLITE_OK) throwSqlError(db, sql);
  if (stmt == nullptr) throwSqlError("no statement to prepare", sql);
  // A second statement would be silently ignored; that is a bug in the caller.
  if (tail != nullptr && !onlyWhitespace(tail, nonNull(sql) + sql.size())) {
    sqlite3_finalize(stmt);
    throwSqlError("prepare() takes one statement; use Connection::exec for scripts", sql);
  }
  return stmt;
}

Statement::Statement(sqlite3* db, std::string_view sql)
    : db_(db), stmt_(prepareOne(db, sql, 0)), cached_(nullptr) {}

Statement::Statement(sqlite3* db, std::string_view sql, StatementCache& cache)
    : db_(db), stmt_(nullptr), cached_(cache.lend(sql)) {
  stmt_ = cached_ != nullptr ? cached_->stmt : prepareOne(db, sql, 0);
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(other.stmt_), cached_(other.cached_) {
  other.stmt_ = nullptr;
  other.cached_ = nullptr;
}

namespace {
// Adds the VM steps `stmt` ran since the last count to its cache's counters.
void countSteps(sqlite3_stmt* stmt, const CachedStatement* cached) {
  if (cached == nullptr || cached->counters == nullptr || stmt == nullptr) return;
  auto steps = sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_VM_STEP, 1);
  cached->counters->vmSteps.fetch_add(static_cast<std::uint64_t>(steps), std::memory_order_relaxed);
}
}  // namespace

Statement::~Statement() {
  if (cached_ == nullptr) {
    sqlite3_finalize(stmt_);
    return;
  }
  countSteps(stmt_, cached_);
  // Back to the cache as if new: reset also ends the read it may have left
  // open (rows not stepped through), which would pin an old WAL snapshot.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  cached_->lent = false;
}

namespace {
void checkBind(sqlite3* db, sqlite3_stmt* stmt, int rc) {
  if (rc != SQLITE_OK) throwSqlError(db, sqlite3_sql(stmt));
}
}  // namespace

Statement& Statement::bind(int index, std::int64_t value) & {
  checkBind(db_, stmt_, sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) & {
  checkBind(
      db_, stmt_,
      sqlite3_bind_text64(stmt_, index, nonNull(text), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::bindBlob(int index, std::string_view bytes) & {
  checkBind(db_, stmt_,
            sqlite3_bind_blob64(stmt_, index, nonNull(bytes), bytes.size(), SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bindNull(int index) & {
  checkBind(db_, stmt_, sqlite3_bind_null(stmt_, index));
  return *this;
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // Take the message before reset(), which may replace it; reset so the
  // statement can be used again after a failed step (e.g. a constraint).
  std::string message = sqlite3_errmsg(db_);
  sqlite3_reset(stmt_);
  throwSqlError(message, sqlite3_sql(stmt_));
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  // The error of the last step was already reported by step(); reset's return
  // code repeats it, so it is not checked here.
  countSteps(stmt_, cached_);
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t Statement::columnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string Statement::columnText(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::string Statement::columnBlob(int column) const {
  // column_blob first, then column_bytes: that order never converts the value.
  const void* blob = sqlite3_column_blob(stmt_, column);
  if (blob == nullptr) return {};
  return std::string(static_cast<const char*>(blob),
                     static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

bool Statement::columnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

}  // namespace switchboard::store
