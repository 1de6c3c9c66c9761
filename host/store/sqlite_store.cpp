#include "store/sqlite_store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <future>
#include <system_error>

#include "store/migrations.h"

namespace switchboard::store {

// ------------------------------------------------------------------- opening

namespace {

// Creates the data dir if needed and checks we can create files in it, so
// the error names the directory rather than SQLite's "unable to open".
void prepareDataDir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw StoreError("cannot create data dir " + dir.string() + ": " + ec.message());
  if (!std::filesystem::is_directory(dir, ec)) {
    throw StoreError("data dir " + dir.string() + " is not a directory");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw StoreError("data dir " + dir.string() +
                     " is not writable: " + std::generic_category().message(errno));
  }
}

}  // namespace

std::unique_ptr<Store> Store::open(const StoreOptions& options) {
  std::filesystem::path dir = options.dataDir.empty() ? "." : options.dataDir;
  prepareDataDir(dir);
  std::filesystem::path file = dir / options.fileName;
  DatabaseHandle db = openDatabase(file, AccessMode::kReadWrite);
  MigrationOutcome migrated = applyMigrations(db.get(), file, storeMigrations());
  if (migrated.fromVersion != migrated.toVersion) {
    spdlog::info("store: {} migrated from schema {} to {}", file.string(), migrated.fromVersion,
                 migrated.toVersion);
  }
  spdlog::info("store: opened {} (schema {})", file.string(), migrated.toVersion);
  return std::make_unique<SqliteStore>(options, std::move(file), std::move(db), migrated.toVersion);
}

SqliteStore::SqliteStore(const StoreOptions& options, std::filesystem::path file,
                         DatabaseHandle writerDb, int schemaVersion)
    : options_(options),
      file_(std::move(file)),
      schemaVersion_(schemaVersion),
      maxBatch_(std::max<std::size_t>(options.maxBatch, 1)),
      writerDb_(std::move(writerDb), &writerCacheCounters_),
      writer_([this] { runWriter(); }) {}

SqliteStore::~SqliteStore() {
  {
    std::lock_guard lock(queueMutex_);
    stopping_ = true;
  }
  queueChanged_.notify_all();
  writer_.join();
}

// -------------------------------------------------------------------- writes

void SqliteStore::write(WriteFn fn, DoneFn done) {
  enqueue(PendingWrite{std::move(fn), std::move(done), nullptr, nullptr});
}

void SqliteStore::queueJoinable(const void* tag, std::shared_ptr<void> state, WriteFn fn,
                                DoneFn done) {
  enqueue(PendingWrite{std::move(fn), std::move(done), tag, std::move(state)});
}

bool SqliteStore::joinLastTagged(const void* tag, const std::function<bool(void*)>& join) {
  // Only the queue's tail may be joined: the writer pops what it takes, so the
  // tail has not started, and nothing queued after it can be overtaken.
  std::lock_guard lock(queueMutex_);
  if (writerExited_ || queue_.empty() || queue_.back().joinTag != tag) return false;
  return join(queue_.back().joinState.get());
}

void SqliteStore::enqueue(PendingWrite pending) {
  {
    std::unique_lock lock(queueMutex_);
    if (!writerExited_) {
      queue_.push_back(std::move(pending));
      // The writer sleeps either for a first write or, inside its commit
      // window, for a full batch; wake it only for those.
      bool wake = queue_.size() == 1 || queue_.size() == maxBatch_;
      lock.unlock();
      if (wake) queueChanged_.notify_one();
      return;
    }
  }
  if (pending.done) pending.done(std::string("store is closed: ") + file_.string());
}

void SqliteStore::writeAndWait(WriteFn fn) {
  if (!fn) throw StoreError("writeAndWait needs a write function");
  waitFor(std::move(fn), "writeAndWait");
}

void SqliteStore::flush() {
  waitFor(WriteFn(), "flush");
}

void SqliteStore::waitFor(WriteFn fn, const char* caller) {
  if (std::this_thread::get_id() == writer_.get_id()) {
    throw StoreError(std::string(caller) +
                     " called on the store's writer thread: it would wait "
                     "for itself forever");
  }
  // Shared with the done callback, which may still be inside set_value when
  // this thread wakes up and returns.
  auto result = std::make_shared<std::promise<Outcome>>();
  std::future<Outcome> outcome = result->get_future();
  write(std::move(fn), [result](Outcome error) { result->set_value(std::move(error)); });
  if (Outcome error = outcome.get()) throw StoreError(*error);
}

void SqliteStore::runWriter() {
  for (;;) {
    std::vector<PendingWrite> batch = takeBatch();
    if (batch.empty()) return;
    commitBatch(batch);
  }
}

std::vector<SqliteStore::PendingWrite> SqliteStore::takeBatch() {
  std::unique_lock lock(queueMutex_);
  queueChanged_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) {
    writerExited_ = true;
    return {};
  }
  // Group commit: a small batch waits a moment for company, so one fsync
  // covers more writes. A stopping store commits what it has at once.
  if (!stopping_ && queue_.size() < maxBatch_ && options_.commitWindow.count() > 0) {
    queueChanged_.wait_for(lock, options_.commitWindow,
                           [&] { return stopping_ || queue_.size() >= maxBatch_; });
  }
  std::size_t count = std::min(queue_.size(), maxBatch_);
  std::vector<PendingWrite> batch;
  batch.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return batch;
}

void SqliteStore::commitBatch(std::vector<PendingWrite>& batch) {
  std::vector<Outcome> outcomes = runBatch(batch);
  batchesRun_.fetch_add(1);  // before any done: see OpenRead::refresh()
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].done) continue;
    try {
      batch[i].done(std::move(outcomes[i]));
    } catch (const std::exception& e) {
      spdlog::error("store: a write's done callback threw: {}", e.what());
    } catch (...) {
      spdlog::error("store: a write's done callback threw a non-standard exception");
    }
  }
}

std::vector<SqliteStore::Outcome> SqliteStore::runBatch(const std::vector<PendingWrite>& batch) {
  std::vector<Outcome> outcomes(batch.size());
  bool anyWrite = false;
  for (const PendingWrite& pending : batch) anyWrite = anyWrite || static_cast<bool>(pending.fn);
  if (!anyWrite) return outcomes;  // only barriers: everything before them is already done

  sqlite3* db = writerDb_.get();
  Connection connection(db, &writerDb_.cache());
  auto started = std::chrono::steady_clock::now();
  std::uint64_t writesRun = 0;
  std::optional<std::string> beginError;
  auto begin = [&] {
    try {
      connection.exec("BEGIN IMMEDIATE");
      return true;
    } catch (const StoreError& e) {
      beginError = std::string("cannot begin the batch transaction: ") + e.what();
      return false;
    }
  };

  // Writes whose savepoint was released into the open transaction.
  std::vector<std::size_t> inTransaction;
  bool open = begin();
  for (std::size_t i = 0; i < batch.size() && open; ++i) {
    if (!batch[i].fn) continue;
    ++writesRun;
    outcomes[i] = runInSavepoint(connection, batch[i].fn);
    if (sqlite3_get_autocommit(db) != 0) {
      // The transaction is gone: SQLite rolled it back after a hard error
      // (disk full, I/O error) or the write ran transaction control itself.
      // The earlier writes of this batch did not happen; start over for the
      // rest.
      std::string why = "the batch transaction was aborted";
      if (outcomes[i]) why += ": " + *outcomes[i];
      outcomes[i] = why;
      for (std::size_t j : inTransaction) outcomes[j] = why;
      inTransaction.clear();
      open = begin();
      continue;
    }
    if (!outcomes[i]) inTransaction.push_back(i);
  }

  std::optional<std::uint64_t> commitMicros;
  if (open) {
    try {
      connection.exec("COMMIT");
      commitMicros =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::steady_clock::now() - started)
                                         .count());
    } catch (const StoreError& e) {
      if (sqlite3_get_autocommit(db) == 0) {
        try {
          connection.exec("ROLLBACK");
        } catch (const StoreError& rollback) {
          spdlog::error("store: ROLLBACK after a failed COMMIT failed: {}", rollback.what());
        }
      }
      for (std::size_t j : inTransaction) outcomes[j] = std::string("commit failed: ") + e.what();
    }
  } else {
    // BEGIN failed (nothing is open, so nothing is in a transaction): every
    // write not yet run or not yet failed fails with that reason.
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].fn && !outcomes[i]) outcomes[i] = *beginError;
    }
  }

  std::uint64_t failed = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].fn && outcomes[i]) ++failed;
  }
  recordBatch(writesRun, failed, commitMicros);
  return outcomes;
}

SqliteStore::Outcome SqliteStore::runInSavepoint(Connection& connection, const WriteFn& fn) {
  try {
    connection.prepare("SAVEPOINT write").run();
  } catch (const StoreError& e) {
    return std::string(e.what());
  }
  Outcome error;
  try {
    fn(connection);
  } catch (const std::exception& e) {
    error = e.what();
    if (error->empty()) error = "write failed with an empty message";
  } catch (...) {
    error = "write threw a non-standard exception";
  }
  if (!error) {
    try {
      connection.prepare("RELEASE write").run();
      return std::nullopt;
    } catch (const StoreError& e) {
      // Undo below: a write that cannot be released must not be committed.
      error = std::string("cannot release the write's savepoint: ") + e.what();
    }
  }
  if (sqlite3_get_autocommit(connection.raw()) != 0) return error;  // nothing left to undo
  try {
    connection.exec("ROLLBACK TO write");
    connection.exec("RELEASE write");
  } catch (const StoreError& e) {
    *error += std::string("; and rolling it back failed: ") + e.what();
  }
  return error;
}

void SqliteStore::recordBatch(std::uint64_t writesRun, std::uint64_t failed,
                              std::optional<std::uint64_t> commitMicros) {
  std::lock_guard lock(statsMutex_);
  stats_.writes += writesRun;
  stats_.failedWrites += failed;
  if (commitMicros) {
    ++stats_.commits;
    stats_.lastCommitMicros = *commitMicros;
    stats_.maxCommitMicros = std::max(stats_.maxCommitMicros, *commitMicros);
    commitLatency_.record(*commitMicros);
  }
}

StoreStats SqliteStore::stats() const {
  StoreStats copy;
  {
    std::lock_guard lock(statsMutex_);
    copy = stats_;
  }
  copy.commitLatency = commitLatency_.snapshot();
  copy.statementCacheHits = cacheCounters_.hits.load(std::memory_order_relaxed) +
                            writerCacheCounters_.hits.load(std::memory_order_relaxed);
  copy.statementCacheMisses = cacheCounters_.misses.load(std::memory_order_relaxed) +
                              writerCacheCounters_.misses.load(std::memory_order_relaxed);
  copy.writeVmSteps = writerCacheCounters_.vmSteps.load(std::memory_order_relaxed);
  std::lock_guard lock(queueMutex_);
  copy.queued = queue_.size();
  return copy;
}

// --------------------------------------------------------------------- reads

// The ReadTransaction: BEGIN (deferred: the snapshot is taken by the first
// statement) on a borrowed reader, COMMIT when it ends. A second one opened on
// the same thread for the same store holds no connection and acts through the
// one open (`open_`).
class SqliteStore::OpenRead final : public ReadTransaction {
 public:
  explicit OpenRead(SqliteStore& store) : store_(store), outer_(current) {
    if (outer_ != nullptr && &outer_->store_ == &store) {
      open_ = outer_->open_;
      return;
    }
    db_ = store.borrowReader();
    try {
      begin();
    } catch (...) {
      store.returnReader(std::move(db_));
      throw;
    }
    current = this;
  }
  ~OpenRead() override {
    if (!db_) return;
    current = outer_;
    end();
    store_.returnReader(std::move(db_));
  }
  OpenRead(const OpenRead&) = delete;
  OpenRead& operator=(const OpenRead&) = delete;

  // A write committed since the count was read may be missing from the
  // snapshot; its done callback, though, runs only after the count moved. So
  // with the count unchanged, anything missing has its done still to come.
  void refresh() override {
    if (store_.batchesRun_.load() == open_->seen_) return;
    open_->end();
    open_->begin();
  }

  // The transaction open on this thread for `store`, if any.
  static OpenRead* on(const SqliteStore& store) {
    OpenRead* open = current;
    return open != nullptr && &open->store_ == &store ? open : nullptr;
  }
  Connection connection() { return Connection(db_->get(), &db_->cache()); }

 private:
  void begin() {
    seen_ = store_.batchesRun_.load();  // before the snapshot: the first statement after this
    connection().prepare("BEGIN").run();
  }
  void end() noexcept {
    if (sqlite3_get_autocommit(db_->get()) != 0) return;  // a failed read already ended it
    try {
      connection().prepare("COMMIT").run();
    } catch (...) {
      sqlite3_exec(db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

  static thread_local OpenRead* current;  // innermost open on this thread

  SqliteStore& store_;
  OpenRead* const outer_;
  OpenRead* open_ = this;  // the one holding the transaction
  std::unique_ptr<CachedDatabase> db_;
  std::uint64_t seen_ = 0;  // batchesRun_ before the snapshot began
};

thread_local SqliteStore::OpenRead* SqliteStore::OpenRead::current = nullptr;

std::unique_ptr<ReadTransaction> SqliteStore::readTransaction() {
  return std::make_unique<OpenRead>(*this);
}

void SqliteStore::read(const std::function<void(Connection&)>& fn) {
  if (OpenRead* open = OpenRead::on(*this)) {
    Connection connection = open->connection();
    fn(connection);
    return;
  }
  // Returns the connection to the pool however fn ends, and never with a
  // transaction left open by fn (it would pin an old snapshot of the WAL).
  struct Borrowed {
    SqliteStore& store;
    std::unique_ptr<CachedDatabase> db;
    ~Borrowed() {
      if (sqlite3_get_autocommit(db->get()) == 0) {
        sqlite3_exec(db->get(), "ROLLBACK", nullptr, nullptr, nullptr);
      }
      store.returnReader(std::move(db));
    }
  };
  Borrowed borrowed{*this, borrowReader()};
  Connection connection(borrowed.db->get(), &borrowed.db->cache());
  fn(connection);
}

std::unique_ptr<CachedDatabase> SqliteStore::borrowReader() {
  {
    std::lock_guard lock(readersMutex_);
    if (!idleReaders_.empty()) {
      std::unique_ptr<CachedDatabase> reader = std::move(idleReaders_.back());
      idleReaders_.pop_back();
      return reader;
    }
  }
  // Opened outside the lock: opening reads the file and may wait on it.
  return std::make_unique<CachedDatabase>(openDatabase(file_, AccessMode::kReadOnly),
                                          &cacheCounters_);
}

void SqliteStore::returnReader(std::unique_ptr<CachedDatabase> reader) {
  std::lock_guard lock(readersMutex_);
  if (idleReaders_.size() < kMaxIdleReaders) idleReaders_.push_back(std::move(reader));
  // Otherwise it closes here: a burst of readers does not keep its connections.
}

}  // namespace switchboard::store
