#include "plugin/canary.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "plugin_test_support.h"

namespace switchboard::plugin {
namespace {

using testing::canaryExecutable;
using ::testing::HasSubstr;

CanaryVerdict canary(const char* library,
                     std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  CanaryOptions options;
  options.executable = canaryExecutable();
  options.timeout = timeout;
  return runCanaryProcess(options, Kind::routing, library);
}

TEST(Canary, PassesAGoodLibraryAndReportsItsVersion) {
  auto verdict = canary(COUNTER_V1_SO);
  EXPECT_TRUE(verdict.passed) << verdict.reason;
  EXPECT_EQ(verdict.version, "1.0.0");
  EXPECT_THAT(verdict.buildId, HasSubstr("counter-fixture"));
}

TEST(Canary, ReportsACrashBySignal) {
  auto verdict = canary(COUNTER_SELFTEST_CRASH_SO);
  EXPECT_FALSE(verdict.passed);
  EXPECT_EQ(verdict.reason, "canary crashed: signal 11 (Segmentation fault)");
}

TEST(Canary, KillsAHangingSelfTestAtTheTimeOut) {
  auto verdict = canary(COUNTER_SELFTEST_HANG_SO, std::chrono::milliseconds(300));
  EXPECT_FALSE(verdict.passed);
  EXPECT_THAT(verdict.reason, HasSubstr("canary timed out after 300 ms"));
}

TEST(Canary, RejectsWrongAbiAndMissingDescriptor) {
  auto abi = canary(COUNTER_WRONG_ABI_SO);
  EXPECT_FALSE(abi.passed);
  EXPECT_THAT(abi.reason, HasSubstr("ABI version mismatch: library has 999, host expects 1"));
  auto none = canary(COUNTER_NO_DESCRIPTOR_SO);
  EXPECT_FALSE(none.passed);
  EXPECT_THAT(none.reason, HasSubstr("no plugin descriptor"));
}

TEST(Canary, ReportsAnExecutableThatCannotBeSpawned) {
  CanaryOptions options;
  options.executable = "/nonexistent/switchboard";
  auto verdict = runCanaryProcess(options, Kind::routing, COUNTER_V1_SO);
  EXPECT_FALSE(verdict.passed);
  EXPECT_THAT(verdict.reason, HasSubstr("/nonexistent/switchboard"));
}

}  // namespace
}  // namespace switchboard::plugin
