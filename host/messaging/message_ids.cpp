#include "messaging/message_ids.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "store/store.h"

namespace switchboard::messaging {

MessageIds::MessageIds(store::Store& store) : store_(store) {
  std::uint64_t start = 0;
  store_.writeAndWait([&](store::Connection& db) {
    auto row = db.prepare(
        "UPDATE counters SET value = value + ? WHERE name = 'next_sequence' RETURNING value");
    row.bind(1, static_cast<std::int64_t>(kBlock));
    if (!row.step()) throw store::StoreError("the counters table has no next_sequence");
    start = static_cast<std::uint64_t>(row.columnInt(0)) - kBlock;
    while (row.step()) {
    }
  });
  next_ = start;
  limit_ = start + kBlock;
}

std::uint64_t MessageIds::next(std::uint64_t senderNumber) {
  if (clustered_.load(std::memory_order_relaxed)) return nextClustered(senderNumber);
  std::uint64_t sequence = next_.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t limit = limit_.load(std::memory_order_acquire);
  if (sequence >= limit) {
    throw std::runtime_error("message ids are being reserved; retry the send");
  }
  if (limit - sequence == kBlock / 2) reserveNextBlock();
  constexpr std::uint64_t kMask = (std::uint64_t{1} << kSequenceBits) - 1;
  return (senderNumber << kSequenceBits) | (sequence & kMask);
}

bool MessageIds::issued(std::uint64_t id) const {
  if (clustered_.load(std::memory_order_relaxed)) return true;
  constexpr std::uint64_t kMask = (std::uint64_t{1} << kSequenceBits) - 1;
  std::uint64_t next = next_.load(std::memory_order_relaxed);
  // Before the sequence wraps (2^34 ids), an issued id is below the next one.
  return next > kMask || (id & kMask) < next;
}

void MessageIds::reserveNextBlock() {
  if (reserving_.exchange(true)) return;
  store_.write(
      [](store::Connection& db) {
        db.prepare("UPDATE counters SET value = value + ? WHERE name = 'next_sequence'")
            .bind(1, static_cast<std::int64_t>(kBlock))
            .run();
      },
      [this](std::optional<std::string> error) {
        if (error) {
          spdlog::error("reserving message ids failed: {}", *error);
        } else {
          limit_.fetch_add(kBlock, std::memory_order_release);
        }
        reserving_ = false;
      });
}

// ---------------------------------------------------------------- cluster mode

void MessageIds::useClusterBlocks(BlockReservation reserve) {
  {
    std::lock_guard lock(clusterMutex_);
    reserveCluster_ = std::move(reserve);
  }
  clustered_ = true;
  reserveClusterBlock();
}

void MessageIds::reserveClusterBlock() {
  std::lock_guard lock(clusterMutex_);
  if (!spareBlock_) reserveClusterBlockLocked();
}

void MessageIds::reserveClusterBlockLocked() {
  if (clusterReserving_ || !reserveCluster_) return;
  clusterReserving_ = true;
  reserveCluster_([this](std::optional<std::uint64_t> start) {
    std::lock_guard lock(clusterMutex_);
    clusterReserving_ = false;
    if (start) spareBlock_ = *start;
  });
}

std::uint64_t MessageIds::nextClustered(std::uint64_t senderNumber) {
  std::lock_guard lock(clusterMutex_);
  if (clusterNext_ >= clusterLimit_) {
    if (!spareBlock_) {
      reserveClusterBlockLocked();
      throw std::runtime_error("message ids are being reserved in the cluster; retry the send");
    }
    clusterNext_ = *spareBlock_;
    clusterLimit_ = *spareBlock_ + kBlock;
    spareBlock_.reset();
  }
  std::uint64_t sequence = clusterNext_++;
  if (clusterLimit_ - clusterNext_ < kBlock / 2 && !spareBlock_) reserveClusterBlockLocked();
  constexpr std::uint64_t kMask = (std::uint64_t{1} << kSequenceBits) - 1;
  return (senderNumber << kSequenceBits) | (sequence & kMask);
}

}  // namespace switchboard::messaging
