// The durable store: one SQLite database in WAL mode under the data dir.
//
// Writes go through a single writer thread that batches whatever is queued into
// one transaction (group commit): one fsync makes a whole batch durable. Each
// write runs inside its own SAVEPOINT, so a write that throws is rolled back
// alone and reported to its own caller while the rest of the batch commits.
// A write's completion callback runs on the writer thread only after COMMIT
// returned with synchronous=FULL: "done without error" means durable.
//
// Reads run on the caller's thread on a pooled read-only connection; in WAL
// mode they never wait for the writer. Each read is its own read transaction,
// unless a ReadTransaction of the store is open on the calling thread.
//
// The schema is versioned (PRAGMA user_version) and brought up to date by
// ordered migrations when the store opens.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/latency_histogram.h"

struct sqlite3;
struct sqlite3_stmt;

namespace switchboard::store {

class StatementCache;
struct CachedStatement;

// Every failure of the store surfaces as this, with SQLite's message.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One prepared statement. Bind indexes start at 1, column indexes at 0.
// Either its own (finalized when destroyed) or lent by its connection's
// StatementCache: then destroying it resets it and clears its bindings (also
// when a callback throws mid-iteration) and gives it back, so the next
// borrower starts from the first row with nothing bound.
class Statement {
 public:
  // Prepares a statement of its own.
  Statement(sqlite3* db, std::string_view sql);
  // Borrows `sql` from `cache`, or prepares its own when the cache cannot lend
  // it (already lent, or full).
  Statement(sqlite3* db, std::string_view sql, StatementCache& cache);
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  ~Statement();

  Statement& bind(int index, std::int64_t value) &;
  Statement& bind(int index, std::string_view text) &;
  Statement& bindBlob(int index, std::string_view bytes) &;
  Statement& bindNull(int index) &;
  // The same on a temporary, so `auto rows = db.prepare(sql).bind(1, x);` works.
  Statement&& bind(int index, std::int64_t value) && { return std::move(bind(index, value)); }
  Statement&& bind(int index, std::string_view text) && { return std::move(bind(index, text)); }
  Statement&& bindBlob(int index, std::string_view bytes) && {
    return std::move(bindBlob(index, bytes));
  }
  Statement&& bindNull(int index) && { return std::move(bindNull(index)); }

  // Advances; true while a row is available. Throws StoreError on failure
  // (a constraint violation included).
  bool step();
  // step() until done, for statements that return no rows.
  void run();
  void reset();

  std::int64_t columnInt(int column) const;
  std::string columnText(int column) const;
  std::string columnBlob(int column) const;
  bool columnIsNull(int column) const;

  // The underlying statement (tests compare it to see the cache at work).
  sqlite3_stmt* raw() const { return stmt_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  CachedStatement* cached_;  // non-null: stmt_ is borrowed from a cache, not owned
};

// A connection handed to write and read callbacks; valid only during the call.
// With a cache (the store's own connections), prepare() reuses the statements
// compiled by earlier callbacks on the same underlying connection.
class Connection {
 public:
  // `cache` (may be null: every statement is prepared afresh) belongs to `db`
  // and outlives this Connection.
  explicit Connection(sqlite3* db, StatementCache* cache = nullptr) : db_(db), cache_(cache) {}
  Statement prepare(std::string_view sql) {
    return cache_ != nullptr ? Statement(db_, sql, *cache_) : Statement(db_, sql);
  }
  void exec(std::string_view sql);
  std::int64_t lastInsertRowid() const;
  int changes() const;
  // False once SQLite ended the transaction itself (a hard error: disk full,
  // I/O error), or outside one.
  bool inTransaction() const;
  sqlite3* raw() const { return db_; }

 private:
  sqlite3* db_;
  StatementCache* cache_;
};

// Writes `count` items inside a write so that one failing does not fail the
// others, at the cost of one savepoint for all of them when none fails: runs
// `write(0, count)` (items [first, last)) in a savepoint; if it throws, rolls
// that back and runs `write(i, i + 1)` for each item in a savepoint of its own.
// Returns each item's error (nullopt: written). An item may therefore be
// written twice, the first time undone: `write` must leave memory right for a
// second run. A throw that ended the transaction (a hard error: disk full, I/O
// error) is rethrown: the whole write fails.
std::vector<std::optional<std::string>> writeEachAlone(
    Connection& db, std::size_t count,
    const std::function<void(std::size_t first, std::size_t last)>& write);

struct StoreOptions {
  std::filesystem::path dataDir = "var";
  std::string fileName = "switchboard.db";
  // How long the writer waits for more writes before committing a batch that
  // is not full. Zero commits as soon as the queue is empty.
  std::chrono::microseconds commitWindow{500};
  std::size_t maxBatch = 2048;
};

struct StoreStats {
  std::uint64_t writes = 0;   // write callbacks run
  std::uint64_t commits = 0;  // transactions committed (each one fsync)
  std::uint64_t failedWrites = 0;
  std::uint64_t lastCommitMicros = 0;
  std::uint64_t maxCommitMicros = 0;
  std::uint64_t queued = 0;  // writes waiting for the writer now
  // Connection::prepare calls served by a connection's statement cache, and
  // those that had to compile their SQL (first use on a connection, the same
  // text prepared while already in use, or a full cache).
  std::uint64_t statementCacheHits = 0;
  std::uint64_t statementCacheMisses = 0;
  // SQLite VM steps run by write callbacks' (cached) statements: how much work
  // the writes did, a figure that grows with rows visited, not with time.
  std::uint64_t writeVmSteps = 0;
  // Commit latency is measured per transaction, from BEGIN to COMMIT returned
  // (running the batch's writes plus the fsync): how long a batch took to
  // become durable once the writer picked it up.
  metrics::LatencyHistogram::Snapshot commitLatency;
};

// Several reads on one thread as one read transaction: while it lives, every
// Store::read() of its store on the thread that opened it runs on one
// connection inside one transaction, so the reads see one snapshot of the
// database (taken at their first statement) and pay once for what SQLite does
// per transaction (taking and dropping a WAL read mark: two fcntl calls; the
// B-tree's begin and end). Destroying it ends the transaction and returns the
// connection to the pool, also when a read threw. Opened and destroyed on one
// thread, innermost first; one opened while another of the same store is open
// on the thread joins it (refresh() then acts on the outer one).
//
// A held snapshot does not see writes committed after it was taken. refresh()
// is for a reader that must not miss them from some point on (a login: see
// session/session_table.h): once it returns, every write is either visible to
// the reads that follow, or its done callback runs after refresh() returned.
// It costs one atomic load when no write committed since the snapshot.
class ReadTransaction {
 public:
  virtual ~ReadTransaction() = default;
  virtual void refresh() = 0;
};

class Store {
 public:
  // Runs in the writer's transaction; throw to fail this write alone.
  using WriteFn = std::function<void(Connection&)>;
  // Runs on the writer thread after the commit (nullopt) or failure (message).
  // Must be quick and must not call back into the store synchronously: post
  // the result to where it is needed.
  using DoneFn = std::function<void(std::optional<std::string> error)>;

  // Creates the data dir and database if needed and runs the migrations.
  // Throws StoreError with a one-line reason (unwritable dir, corrupt file).
  static std::unique_ptr<Store> open(const StoreOptions& options);
  virtual ~Store() = default;

  // Queues a write. `done` is always called exactly once, also at shutdown.
  virtual void write(WriteFn fn, DoneFn done) = 0;

  // ---- Joinable writes
  //
  // Writes of one kind that pile up behind the writer can run as one: one
  // savepoint, and whatever the kind can share (a statement per recipient
  // rather than per item) done once. A joinable write carries a `State` of the
  // caller's type holding its items; its fn and done handle every item in it.
  // While that write is the last one queued and the writer has not taken it,
  // joinLast<State> adds an item to its State instead of queueing a write of
  // its own. Nothing was queued between the two, so the item commits exactly
  // where a write of its own would have: the queue order of writes is kept.

  // write(), for a write whose `state` later items may join.
  template <class State>
  void writeJoinable(std::shared_ptr<State> state, WriteFn fn, DoneFn done) {
    queueJoinable(&kJoinTag<State>, std::move(state), std::move(fn), std::move(done));
  }
  // When the last queued write is a joinable write of `State` the writer has
  // not taken, calls `join(State&)` and returns what it returns (false: it
  // declined, the write is full, say). Otherwise calls nothing and returns
  // false. `join` runs under the queue's lock, on the caller's thread: it
  // must only add to the State, quickly, and never call the store.
  template <class State, class Join>
  bool joinLast(Join&& join) {
    return joinLastTagged(&kJoinTag<State>,
                          [&join](void* state) { return join(*static_cast<State*>(state)); });
  }

  // Queues a write and blocks until it is durable; throws StoreError if it
  // failed. Never call this on a network thread.
  virtual void writeAndWait(WriteFn fn) = 0;
  // Runs `fn` now on this thread on a read-only connection (inside this
  // thread's open ReadTransaction of this store, if there is one).
  virtual void read(const std::function<void(Connection&)>& fn) = 0;
  // Opens a ReadTransaction on this thread (see there).
  virtual std::unique_ptr<ReadTransaction> readTransaction() = 0;
  // Blocks until every write queued before the call is durable.
  virtual void flush() = 0;

  virtual int schemaVersion() const = 0;
  virtual StoreStats stats() const = 0;
  virtual std::filesystem::path path() const = 0;

 protected:
  // One tag per State type: its address says which type a joinable write holds.
  template <class State>
  static constexpr char kJoinTag = 0;
  // The untyped halves of writeJoinable and joinLast: `tag` is &kJoinTag<State>
  // and `state` a State; `join` gets the queued write's state.
  virtual void queueJoinable(const void* tag, std::shared_ptr<void> state, WriteFn fn,
                             DoneFn done) = 0;
  virtual bool joinLastTagged(const void* tag, const std::function<bool(void*)>& join) = 0;
};

}  // namespace switchboard::store
