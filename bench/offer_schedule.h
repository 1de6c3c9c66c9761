// The open loop's timetable: when each offered message is due, to the nanosecond.
#pragma once

#include <cstdint>

namespace switchboard::bench {

// Message k of an open loop offering `ratePerSecond` from `startNs` (CLOCK_MONOTONIC) is due
// at startNs + k / rate, exactly: the generator sleeps until that instant and sends it then,
// never on a coarser tick, and stamps the body with that instant (the intended send time).
// Flows take the offers in turn (round robin). Plain data, no clock of its own.
class OfferSchedule {
 public:
  OfferSchedule() = default;
  OfferSchedule(std::int64_t startNs, double ratePerSecond)
      : startNs_(startNs), rate_(ratePerSecond > 0 ? ratePerSecond : 1) {}

  // When offer k is due.
  std::int64_t dueNs(std::uint64_t k) const {
    return startNs_ + static_cast<std::int64_t>(static_cast<double>(k) * 1e9 / rate_);
  }
  // The flow that carries offer k.
  static std::uint32_t flowOf(std::uint64_t k, std::size_t flows) {
    return static_cast<std::uint32_t>(k % flows);
  }

 private:
  std::int64_t startNs_ = 0;
  double rate_ = 1;
};

// An offer is skipped (counted, not sent) when its flow already has this many messages in
// flight: the server has stopped delivering, and an unbounded backlog in the generator would
// only measure the generator's memory.
constexpr std::uint32_t kOpenLoopInFlightLimit = 1000;

}  // namespace switchboard::bench
