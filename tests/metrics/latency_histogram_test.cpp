#include "metrics/latency_histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace switchboard::metrics {
namespace {

TEST(LatencyHistogram, EmptyHasNoQuantiles) {
  LatencyHistogram histogram;
  auto snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.count(), 0u);
  EXPECT_EQ(snapshot.p50(), 0u);
  EXPECT_EQ(snapshot.p99(), 0u);
  EXPECT_EQ(snapshot.countAtOrBelow(1'000'000), 0u);
}

TEST(LatencyHistogram, PercentilesBoundTheRecordedValuesWithinABucket) {
  LatencyHistogram histogram;
  for (std::uint64_t v = 1; v <= 1000; ++v) histogram.record(v * 1000);
  auto snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.count(), 1000u);
  EXPECT_EQ(snapshot.max(), 1'000'000u);
  EXPECT_EQ(snapshot.sum(), 500'500'000u);
  // Within one bucket (25%) above the exact value, never below it.
  EXPECT_GE(snapshot.p50(), 500'000u);
  EXPECT_LE(snapshot.p50(), 625'000u);
  EXPECT_GE(snapshot.p99(), 990'000u);
  EXPECT_LE(snapshot.p99(), 1'000'000u);
  EXPECT_EQ(snapshot.percentile(1.0), 1'000'000u);  // capped by the max seen
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram histogram;
  for (int i = 0; i < 10; ++i) histogram.record(7);
  EXPECT_EQ(histogram.percentile(0.5), 7u);
  EXPECT_EQ(histogram.percentile(1.0), 7u);
}

TEST(LatencyHistogram, CumulativeCountsForExportNeverOvercount) {
  LatencyHistogram histogram;
  for (int i = 0; i < 98; ++i) histogram.record(150);
  histogram.record(3'000);
  histogram.record(40'000);
  auto snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.countAtOrBelow(100), 0u);
  EXPECT_EQ(snapshot.countAtOrBelow(200), 98u);
  EXPECT_EQ(snapshot.countAtOrBelow(5'000), 99u);
  EXPECT_EQ(snapshot.countAtOrBelow(50'000), 100u);
  // Each bucket's upper bound is the largest value it holds.
  for (std::size_t i = 1; i < LatencyHistogram::kBuckets; ++i) {
    EXPECT_EQ(LatencyHistogram::bucketOf(LatencyHistogram::upperBound(i)), i);
    EXPECT_EQ(LatencyHistogram::bucketOf(LatencyHistogram::upperBound(i - 1) + 1), i);
  }
}

TEST(LatencyHistogram, ConcurrentRecordsAreAllCounted) {
  LatencyHistogram histogram;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&histogram, t]() {
      for (int i = 0; i < 10'000; ++i) histogram.record(static_cast<std::uint64_t>(t * 1000 + i));
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(histogram.snapshot().count(), 40'000u);
  EXPECT_EQ(histogram.max(), 3000u + 9999u);
}

}  // namespace
}  // namespace switchboard::metrics
