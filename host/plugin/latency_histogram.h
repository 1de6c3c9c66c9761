// A fixed-bucket, lock-free histogram for call latencies and swap pauses.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace switchboard::plugin {

// Counts values (any unit: ns for calls, us for pauses) in log-linear buckets:
// exact below 16, then four buckets per power of two, so a percentile is off by
// at most 25%. record() is one relaxed atomic add and may run on any thread
// concurrently with percentile(); a percentile read during writes is a
// consistent-enough snapshot for metrics, not an exact one.
class LatencyHistogram {
 public:
  static constexpr std::size_t kBuckets = 16 + 4 * 60;

  void record(std::uint64_t value) {
    buckets_[bucketOf(value)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t seen = max_.load(std::memory_order_relaxed);
    while (value > seen && !max_.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
  }

  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::uint64_t max() const { return max_.load(std::memory_order_relaxed); }

  // The upper bound of the bucket holding the q-th quantile (0 < q <= 1);
  // never above max(). Zero when empty.
  std::uint64_t percentile(double q) const {
    std::uint64_t total = 0;
    std::array<std::uint64_t, kBuckets> snapshot{};
    for (std::size_t i = 0; i < kBuckets; ++i) {
      snapshot[i] = buckets_[i].load(std::memory_order_relaxed);
      total += snapshot[i];
    }
    if (total == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total));
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += snapshot[i];
      if (seen >= rank) {
        std::uint64_t bound = upperBound(i);
        std::uint64_t highest = max();
        return bound < highest ? bound : highest;
      }
    }
    return max();
  }

 private:
  static std::size_t bucketOf(std::uint64_t value) {
    if (value < 16) return static_cast<std::size_t>(value);
    int exponent = std::bit_width(value) - 1;  // >= 4
    auto sub = static_cast<std::size_t>((value >> (exponent - 2)) & 3);
    std::size_t index = 16 + static_cast<std::size_t>(exponent - 4) * 4 + sub;
    return index < kBuckets ? index : kBuckets - 1;
  }
  static std::uint64_t upperBound(std::size_t index) {
    if (index < 16) return index;
    std::size_t exponent = (index - 16) / 4 + 4;
    std::uint64_t sub = (index - 16) % 4;
    std::uint64_t base = std::uint64_t{1} << exponent;
    std::uint64_t step = base / 4;
    return base + (sub + 1) * step - 1;
  }

  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> max_{0};
};

}  // namespace switchboard::plugin
