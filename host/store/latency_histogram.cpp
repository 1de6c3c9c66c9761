#include "store/latency_histogram.h"

#include <algorithm>
#include <cmath>

namespace switchboard::store {

void LatencyHistogram::record(std::uint64_t micros) {
  auto bound = std::lower_bound(kBoundsMicros.begin(), kBoundsMicros.end(), micros);
  ++buckets_[static_cast<std::size_t>(bound - kBoundsMicros.begin())];
  ++count_;
  sum_ += micros;
  max_ = std::max(max_, micros);
}

std::uint64_t LatencyHistogram::quantileMicros(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the observation we want, 1-based: q = 0.5 of 3 is the 2nd.
  auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBoundsMicros.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(kBoundsMicros[i], max_);
  }
  return max_;
}

}  // namespace switchboard::store
