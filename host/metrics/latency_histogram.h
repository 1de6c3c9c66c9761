// The one latency histogram of the project: plugin calls (ns), swap pauses and
// store commits (µs), load-generator round trips. Lock-free to record, cheap
// to read, good to about 25%.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace switchboard::metrics {

// Log-linear buckets over any unit: values below 16 exactly, then four buckets
// per power of two, so any quantile is off by at most 25%. Histogram::record
// is three relaxed atomic adds (and a max update), safe from any thread while
// others read; a Snapshot is a plain copy to query or export at leisure.
class LatencyHistogram {
 public:
  static constexpr std::size_t kBuckets = 16 + 4 * 60;

  // A copy of the counts at one moment (consistent enough for metrics: the
  // buckets are read one by one while writers may add).
  class Snapshot {
   public:
    std::uint64_t count() const { return count_; }
    std::uint64_t sum() const { return sum_; }
    std::uint64_t max() const { return max_; }

    // The upper bound of the bucket holding the q-th quantile (0 < q <= 1),
    // never above max(). Zero when empty.
    std::uint64_t percentile(double q) const {
      if (count_ == 0) return 0;
      auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
      if (rank == 0) rank = 1;
      std::uint64_t seen = 0;
      for (std::size_t i = 0; i < kBuckets; ++i) {
        seen += buckets_[i];
        if (seen >= rank) return upperBound(i) < max_ ? upperBound(i) : max_;
      }
      return max_;
    }
    std::uint64_t p50() const { return percentile(0.50); }
    std::uint64_t p99() const { return percentile(0.99); }

    // Observations whose bucket lies wholly at or below `bound`: the
    // cumulative count of a Prometheus histogram bucket `le=bound` (an
    // under-estimate by at most the one bucket that straddles the bound).
    std::uint64_t countAtOrBelow(std::uint64_t bound) const {
      std::uint64_t total = 0;
      for (std::size_t i = 0; i < kBuckets && upperBound(i) <= bound; ++i) total += buckets_[i];
      return total;
    }

   private:
    friend class LatencyHistogram;
    std::array<std::uint64_t, kBuckets> buckets_{};
    std::uint64_t count_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t max_ = 0;
  };

  void record(std::uint64_t value) {
    buckets_[bucketOf(value)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
    std::uint64_t seen = max_.load(std::memory_order_relaxed);
    while (value > seen && !max_.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
  }

  Snapshot snapshot() const {
    Snapshot copy;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      copy.buckets_[i] = buckets_[i].load(std::memory_order_relaxed);
      copy.count_ += copy.buckets_[i];
    }
    copy.sum_ = sum_.load(std::memory_order_relaxed);
    copy.max_ = max_.load(std::memory_order_relaxed);
    return copy;
  }

  // Shorthands over a fresh snapshot.
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  std::uint64_t percentile(double q) const { return snapshot().percentile(q); }

  static std::size_t bucketOf(std::uint64_t value) {
    if (value < 16) return static_cast<std::size_t>(value);
    int exponent = std::bit_width(value) - 1;  // >= 4
    auto sub = static_cast<std::size_t>((value >> (exponent - 2)) & 3);
    std::size_t index = 16 + static_cast<std::size_t>(exponent - 4) * 4 + sub;
    return index < kBuckets ? index : kBuckets - 1;
  }
  // The largest value bucket `index` holds.
  static std::uint64_t upperBound(std::size_t index) {
    if (index < 16) return index;
    std::size_t exponent = (index - 16) / 4 + 4;
    std::uint64_t sub = (index - 16) % 4;
    std::uint64_t base = std::uint64_t{1} << exponent;
    return base + (sub + 1) * (base / 4) - 1;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
};

}  // namespace switchboard::metrics
