// The Store implementation over SQLite: one writer thread with group commit,
// a pool of read-only connections for readers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "store/database_handle.h"
#include "store/statement_cache.h"
#include "store/store.h"

namespace switchboard::store {

// Owns the writer connection (used only on the writer thread once started),
// the writer thread, the queue of pending writes and the idle read-only
// connections.
//
// Writer: takes everything queued (up to maxBatch; when fewer are waiting it
// waits up to commitWindow for more), runs them in one IMMEDIATE transaction,
// each in its own SAVEPOINT, commits, then calls every done in queue order.
// Destruction drops nothing: it lets the writer drain the queue
// (including writes queued by done callbacks during the drain), joins it,
// and only then closes the connections. A write queued after the writer has
// exited gets its done called at once, on the caller's thread, with an error.
// The store must not be destroyed from the writer thread (a done callback).
//
// Readers: read() borrows an idle read-only connection or opens a new one;
// at most kMaxIdleReaders stay open afterwards. A ReadTransaction (OpenRead)
// holds one borrowed connection for the reads of its thread until it ends.
//
// Every connection (the writer's and each reader's) carries its own
// StatementCache, so the SQL texts of the callbacks are compiled once per
// connection; a reader closed by the pool takes its cache with it.
class SqliteStore final : public Store {
 public:
  static constexpr std::size_t kMaxIdleReaders = 8;

  // `writerDb` is open and fully migrated to `schemaVersion`.
  SqliteStore(const StoreOptions& options, std::filesystem::path file, DatabaseHandle writerDb,
              int schemaVersion);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  void write(WriteFn fn, DoneFn done) override;
  void writeAndWait(WriteFn fn) override;
  void read(const std::function<void(Connection&)>& fn) override;
  std::unique_ptr<ReadTransaction> readTransaction() override;
  void flush() override;

  int schemaVersion() const override { return schemaVersion_; }
  StoreStats stats() const override;
  std::filesystem::path path() const override { return file_; }

 private:
  class OpenRead;

  // An empty fn marks a barrier (flush): it runs nothing and is not counted
  // as a write; its done runs once everything queued before it is done.
  // A joinable write also carries its tag and state (see Store::joinLast).
  struct PendingWrite {
    WriteFn fn;
    DoneFn done;
    const void* joinTag = nullptr;
    std::shared_ptr<void> joinState;
  };

  void queueJoinable(const void* tag, std::shared_ptr<void> state, WriteFn fn,
                     DoneFn done) override;
  bool joinLastTagged(const void* tag, const std::function<bool(void*)>& join) override;
  // Queues `pending`, or calls its done at once with an error once the
  // writer has exited.
  void enqueue(PendingWrite pending);
  using Outcome = std::optional<std::string>;  // nullopt: committed

  void runWriter();
  // Blocks for the next batch; empty once stopping and drained.
  std::vector<PendingWrite> takeBatch();
  void commitBatch(std::vector<PendingWrite>& batch);
  // Runs the batch's writes in a transaction on the writer connection,
  // records the stats and returns one outcome per entry.
  std::vector<Outcome> runBatch(const std::vector<PendingWrite>& batch);
  Outcome runInSavepoint(Connection& connection, const WriteFn& fn);
  void recordBatch(std::uint64_t writesRun, std::uint64_t failed,
                   std::optional<std::uint64_t> commitMicros);
  // Queues `fn` and blocks until its done ran; throws StoreError on failure.
  void waitFor(WriteFn fn, const char* caller);

  std::unique_ptr<CachedDatabase> borrowReader();
  void returnReader(std::unique_ptr<CachedDatabase> reader);

  const StoreOptions options_;
  const std::filesystem::path file_;
  const int schemaVersion_;
  const std::size_t maxBatch_;
  // Before every connection: their caches count into it until they close.
  StatementCacheCounters cacheCounters_;        // the readers'
  StatementCacheCounters writerCacheCounters_;  // the writer's (its VM steps are StoreStats')
  CachedDatabase writerDb_;

  mutable std::mutex queueMutex_;
  std::condition_variable queueChanged_;
  std::deque<PendingWrite> queue_;
  bool stopping_ = false;
  bool writerExited_ = false;

  std::mutex readersMutex_;
  std::vector<std::unique_ptr<CachedDatabase>> idleReaders_;

  // Batches the writer has run (committed, failed, or barriers only), counted
  // once the batch's transaction is over and before any of its done callbacks
  // runs: OpenRead::refresh() compares it with the count it read before its
  // snapshot began.
  std::atomic<std::uint64_t> batchesRun_{0};

  mutable std::mutex statsMutex_;
  StoreStats stats_;  // `queued` and `commitLatency` are filled in when read
  metrics::LatencyHistogram commitLatency_;

  // Last: started once everything above exists.
  std::thread writer_;
};

}  // namespace switchboard::store
