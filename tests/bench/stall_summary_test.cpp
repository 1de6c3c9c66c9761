// bench/stall_summary.*: the arithmetic cpu_stalls reports, on gaps given by hand.
#include "stall_summary.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace switchboard::bench {
namespace {

constexpr std::int64_t kMs = 1'000'000;

TEST(StallSummaryTest, CountsTheGapsByLengthAndTheirExcessOverTheBudget) {
  std::vector<std::int64_t> gaps{kMs / 10, kMs / 2, 3 * kMs / 2, 3 * kMs, 8 * kMs};
  StallSummary s = summarizeStalls(gaps, 4.0, kMs);
  EXPECT_EQ(s.gaps, 5u);
  EXPECT_EQ(s.over1ms, 3u);
  EXPECT_EQ(s.over2ms, 2u);
  EXPECT_EQ(s.over5ms, 1u);
  EXPECT_EQ(s.longestNs, 8 * kMs);
  EXPECT_EQ(s.lostNs, kMs / 10 + kMs / 2 + 3 * kMs / 2 + 3 * kMs + 8 * kMs);
  // 0.5 + 2 + 7 ms past the 1 ms budget.
  EXPECT_EQ(s.excessNs, 19 * kMs / 2);
}

TEST(StallSummaryTest, TheShareWithinBudgetFollowsTheExcessPerSecond) {
  // One 5 ms stall a second: 4 ms a second past a 1 ms budget. For p99 (1% of messages may be
  // late) 0.004 / (1 - rho) < 0.01 holds while rho < 0.6.
  std::vector<std::int64_t> gaps(10, 5 * kMs);
  StallSummary s = summarizeStalls(gaps, 10.0, kMs);
  EXPECT_NEAR(highestShareWithinBudget(s, 0.99), 0.6, 1e-9);
  // p99.9 allows a tenth of that: 0.004 > 0.001 at any load.
  EXPECT_EQ(highestShareWithinBudget(s, 0.999), 0.0);
}

TEST(StallSummaryTest, NoStallPastTheBudgetAllowsTheWholeCpu) {
  std::vector<std::int64_t> gaps{kMs / 2, kMs};
  StallSummary s = summarizeStalls(gaps, 1.0, kMs);
  EXPECT_EQ(s.excessNs, 0);
  EXPECT_EQ(highestShareWithinBudget(s, 0.99), 1.0);
  EXPECT_EQ(highestShareWithinBudget(summarizeStalls({}, 0.0, kMs), 0.99), 0.0);
}

TEST(StallSummaryTest, WakeupsAreSummarizedByTheirLatenessAndCountedPastTheBudget) {
  std::vector<std::int64_t> lateness;
  for (int i = 0; i < 1000; ++i) lateness.push_back((1000 - i) * 1000);  // 1 µs ... 1 ms
  lateness.push_back(3 * kMs);
  lateness.push_back(kMs + 1);
  WakeSummary s = summarizeWakeups(lateness, kMs);
  EXPECT_EQ(s.wakeups, 1002u);
  EXPECT_EQ(s.longestNs, 3 * kMs);
  EXPECT_EQ(s.overBudget, 2u);  // exactly at the budget is not past it
  EXPECT_EQ(s.p50Ns, 501 * 1000);
  EXPECT_EQ(s.p99Ns, 991 * 1000);
  EXPECT_EQ(summarizeWakeups({}, kMs).wakeups, 0u);
}

}  // namespace
}  // namespace switchboard::bench
