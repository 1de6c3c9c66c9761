// A fixed-bucket latency histogram, cheap enough to record every commit.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace switchboard::store {

// Counts observations (in microseconds) into fixed buckets on a 1-2-5 scale
// from 10 µs to 10 s plus an overflow bucket, so it can be exported as a
// Prometheus histogram (cumulative counts per upper bound, sum, count) and
// queried for quantiles. A plain value: copy it to snapshot it. Not
// synchronized; the owner guards it (the store keeps it under its stats lock).
class LatencyHistogram {
 public:
  // Inclusive upper bounds of the finite buckets; bucket kBounds.size() is +Inf.
  static constexpr std::array<std::uint64_t, 19> kBoundsMicros = {
      10,     20,     50,      100,     200,     500,       1'000,     2'000,     5'000,     10'000,
      20'000, 50'000, 100'000, 200'000, 500'000, 1'000'000, 2'000'000, 5'000'000, 10'000'000};
  static constexpr std::size_t kBucketCount = kBoundsMicros.size() + 1;

  void record(std::uint64_t micros);

  std::uint64_t count() const { return count_; }
  std::uint64_t sumMicros() const { return sum_; }
  std::uint64_t maxMicros() const { return max_; }
  // Observations in bucket `index` alone (not cumulative); the last is overflow.
  std::uint64_t bucket(std::size_t index) const { return buckets_.at(index); }

  // An upper estimate of quantile q in [0, 1]: the upper bound of the bucket
  // holding the q-th observation, never above the largest value seen. Zero
  // when empty.
  std::uint64_t quantileMicros(double q) const;
  std::uint64_t p50Micros() const { return quantileMicros(0.50); }
  std::uint64_t p99Micros() const { return quantileMicros(0.99); }

 private:
  std::array<std::uint64_t, kBucketCount> buckets_{};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace switchboard::store
