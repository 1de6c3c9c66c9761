#include "plugin/latency_histogram.h"

#include <gtest/gtest.h>

namespace switchboard::plugin {
namespace {

TEST(PluginLatencyHistogram, PercentilesBoundTheRecordedValues) {
  LatencyHistogram histogram;
  EXPECT_EQ(histogram.percentile(0.99), 0u);
  for (std::uint64_t v = 1; v <= 1000; ++v) histogram.record(v * 1000);
  EXPECT_EQ(histogram.count(), 1000u);
  EXPECT_EQ(histogram.max(), 1'000'000u);
  // Within one bucket (25%) above the exact value, never below it.
  EXPECT_GE(histogram.percentile(0.50), 500'000u);
  EXPECT_LE(histogram.percentile(0.50), 625'000u);
  EXPECT_GE(histogram.percentile(0.99), 990'000u);
  EXPECT_LE(histogram.percentile(0.99), 1'000'000u);
}

TEST(PluginLatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram histogram;
  for (int i = 0; i < 10; ++i) histogram.record(7);
  EXPECT_EQ(histogram.percentile(0.5), 7u);
  EXPECT_EQ(histogram.percentile(1.0), 7u);
}

}  // namespace
}  // namespace switchboard::plugin
