// A latency histogram that merges across processes: log-spaced buckets, fixed layout.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace switchboard::bench {

// Counts nanosecond latencies in buckets about 2% wide from 1 µs to about 100 s (values
// outside are clamped into the first or last bucket), so percentiles are within 2% and
// two histograms add bucket by bucket. Workers print theirs with encode(); the
// coordinator adds them with decodeAdd(). Not thread-safe: one per loop.
//
// Why not metrics::LatencyHistogram (host/metrics): that one is lock-free and good to 25%,
// right for a server's gauges; comparing p99/p999 of two servers needs 2%, and the
// generator's books must cross process boundaries.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 1000;
  static constexpr double kBase = 1000.0;  // ns at the bottom of bucket 0
  static constexpr double kGrowth = 1.02;

  void record(std::int64_t ns) {
    int index = 0;
    if (ns > kBase) index = static_cast<int>(std::log(ns / kBase) / std::log(kGrowth));
    index = std::clamp(index, 0, kBuckets - 1);
    ++counts_[static_cast<size_t>(index)];
    ++total_;
    max_ = std::max(max_, ns);
  }

  std::uint64_t count() const { return total_; }
  std::int64_t maxNs() const { return max_; }

  // The upper edge of the bucket holding quantile q (0..1); 0 when empty.
  double percentileNs(double q) const {
    if (total_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
    rank = std::max<std::uint64_t>(rank, 1);
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[static_cast<size_t>(i)];
      if (seen >= rank) {
        return std::min(kBase * std::pow(kGrowth, i + 1), static_cast<double>(max_));
      }
    }
    return static_cast<double>(max_);
  }

  // "max;index:count,index:count" with empty buckets left out.
  std::string encode() const {
    std::ostringstream out;
    out << max_ << ';';
    bool first = true;
    for (int i = 0; i < kBuckets; ++i) {
      if (counts_[static_cast<size_t>(i)] == 0) continue;
      if (!first) out << ',';
      first = false;
      out << i << ':' << counts_[static_cast<size_t>(i)];
    }
    return out.str();
  }

  // Adds a histogram printed by encode(); ignores malformed pieces.
  void decodeAdd(const std::string& text) {
    auto semi = text.find(';');
    if (semi == std::string::npos) return;
    max_ = std::max<std::int64_t>(max_, std::stoll(text.substr(0, semi)));
    std::istringstream in(text.substr(semi + 1));
    std::string piece;
    while (std::getline(in, piece, ',')) {
      auto colon = piece.find(':');
      if (colon == std::string::npos) continue;
      int index = std::stoi(piece.substr(0, colon));
      std::uint64_t n = std::stoull(piece.substr(colon + 1));
      if (index < 0 || index >= kBuckets) continue;
      counts_[static_cast<size_t>(index)] += n;
      total_ += n;
    }
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
  std::int64_t max_ = 0;
};

}  // namespace switchboard::bench
