#include "store/latency_histogram.h"

#include <gtest/gtest.h>

namespace switchboard::store {
namespace {

TEST(LatencyHistogram, EmptyHasNoQuantiles) {
  LatencyHistogram histogram;
  EXPECT_EQ(histogram.count(), 0u);
  EXPECT_EQ(histogram.p50Micros(), 0u);
  EXPECT_EQ(histogram.p99Micros(), 0u);
}

TEST(LatencyHistogram, CountsIntoBucketsByInclusiveUpperBound) {
  LatencyHistogram histogram;
  histogram.record(0);
  histogram.record(10);          // bucket 0 (<= 10)
  histogram.record(11);          // bucket 1 (<= 20)
  histogram.record(20'000'000);  // overflow
  EXPECT_EQ(histogram.bucket(0), 2u);
  EXPECT_EQ(histogram.bucket(1), 1u);
  EXPECT_EQ(histogram.bucket(LatencyHistogram::kBucketCount - 1), 1u);
  EXPECT_EQ(histogram.count(), 4u);
  EXPECT_EQ(histogram.sumMicros(), 20'000'021u);
  EXPECT_EQ(histogram.maxMicros(), 20'000'000u);
}

TEST(LatencyHistogram, QuantilesAreBucketUpperBoundsCappedByMax) {
  LatencyHistogram histogram;
  for (int i = 0; i < 98; ++i) histogram.record(150);  // bucket <= 200
  histogram.record(3'000);                             // bucket <= 5'000
  histogram.record(40'000);                            // bucket <= 50'000
  EXPECT_EQ(histogram.p50Micros(), 200u);
  EXPECT_EQ(histogram.p99Micros(), 5'000u);
  EXPECT_EQ(histogram.quantileMicros(1.0), 40'000u);  // capped by the max seen
}

}  // namespace
}  // namespace switchboard::store
