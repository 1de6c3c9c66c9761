#include "stall_summary.h"

#include <algorithm>
#include <vector>

namespace switchboard::bench {

StallSummary summarizeStalls(std::span<const std::int64_t> gapsNs, double seconds,
                             std::int64_t budgetNs) {
  StallSummary s;
  s.seconds = seconds;
  s.budgetNs = budgetNs;
  for (std::int64_t gap : gapsNs) {
    ++s.gaps;
    s.over1ms += gap > 1'000'000;
    s.over2ms += gap > 2'000'000;
    s.over5ms += gap > 5'000'000;
    s.longestNs = std::max(s.longestNs, gap);
    s.lostNs += gap;
    if (gap > budgetNs) s.excessNs += gap - budgetNs;
  }
  return s;
}

WakeSummary summarizeWakeups(std::span<const std::int64_t> latenessNs, std::int64_t budgetNs) {
  WakeSummary s;
  s.budgetNs = budgetNs;
  if (latenessNs.empty()) return s;
  std::vector<std::int64_t> sorted(latenessNs.begin(), latenessNs.end());
  std::sort(sorted.begin(), sorted.end());
  auto at = [&](double q) {
    return sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1))];
  };
  s.wakeups = sorted.size();
  s.p50Ns = at(0.50);
  s.p99Ns = at(0.99);
  s.p999Ns = at(0.999);
  s.longestNs = sorted.back();
  s.overBudget = static_cast<std::uint64_t>(
      sorted.end() - std::upper_bound(sorted.begin(), sorted.end(), budgetNs));
  return s;
}

double highestShareWithinBudget(const StallSummary& summary, double quantile) {
  if (summary.seconds <= 0) return 0;
  double excessPerSecond = static_cast<double>(summary.excessNs) / 1e9 / summary.seconds;
  return std::clamp(1.0 - excessPerSecond / (1.0 - quantile), 0.0, 1.0);
}

}  // namespace switchboard::bench
