// Server ids for messages, handed out from memory without touching the disk.
//
// Layout: the sender's user number in the high 30 bits, a sequence number in
// the low 34. A receipt names only ids, and finds the sender from the id alone,
// so no row has to be kept per delivered message. Every recipient of one send
// sees the same id.
//
// The sequence is reserved durably in blocks ahead of use (the `counters`
// table): a restart, or a crash, starts past every block a running server may
// have used, so ids never repeat. Thread-safe.
//
// In a cluster a sender may send from any node, so one node's counter is not
// enough: after useClusterBlocks() the blocks come from the cluster (a counter
// every node draws disjoint ranges from, docs/cluster.md), and next() takes a
// mutex (cluster mode only; the single-node path is unchanged but for one
// flag read). issued() cannot know other nodes' blocks and answers true.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

namespace switchboard::store {
class Store;
}

namespace switchboard::messaging {

class MessageIds {
 public:
  static constexpr int kSequenceBits = 34;
  static constexpr std::uint64_t kSystemSender = 1;  // the operator's broadcasts
  // Their sender's name: not a phone number, so no phone can be it.
  static constexpr const char* kSystemName = "system";
  static constexpr std::uint64_t kBlock = std::uint64_t{1} << 20;

  // Reserves the first block (a durable write; blocks, so call at start-up).
  explicit MessageIds(store::Store& store);

  // A new id for a message from user `senderNumber`. Throws std::runtime_error
  // in the (practically unreachable) case that the reserved block ran out
  // before the next reservation was durable.
  std::uint64_t next(std::uint64_t senderNumber);

  static std::uint64_t senderOf(std::uint64_t id) { return id >> kSequenceBits; }
  // Whether this server can have handed out `id`'s sequence already (ids from
  // before a restart included); false for ids from the future.
  bool issued(std::uint64_t id) const;

  // Cluster mode, from now on. `reserve(done)` must fetch the first sequence
  // of a fresh block of kBlock from the cluster without blocking the caller,
  // then call done(start), or done(nullopt) if it could not, from any thread
  // but never before returning (done takes the lock reserve is called under).
  // Until the first block is in, next() throws "retry" as when a block runs out.
  using BlockReservation =
      std::function<void(std::function<void(std::optional<std::uint64_t>)> done)>;
  void useClusterBlocks(BlockReservation reserve);
  // Asks for a spare block now unless one is in hand or on its way (after a
  // reconnect, so the next send does not wait for the first one's failure).
  void reserveClusterBlock();

 private:
  void reserveNextBlock();
  std::uint64_t nextClustered(std::uint64_t senderNumber);
  void reserveClusterBlockLocked();

  store::Store& store_;
  std::atomic<std::uint64_t> next_{0};
  std::atomic<std::uint64_t> limit_{0};  // first sequence not reserved
  std::atomic<bool> reserving_{false};

  std::atomic<bool> clustered_{false};
  std::mutex clusterMutex_;  // guards what follows
  BlockReservation reserveCluster_;
  std::uint64_t clusterNext_ = 0;
  std::uint64_t clusterLimit_ = 0;
  std::optional<std::uint64_t> spareBlock_;
  bool clusterReserving_ = false;
};

}  // namespace switchboard::messaging
