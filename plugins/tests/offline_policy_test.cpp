// The offline plugin, loaded from its .so: expiry, push throttling on the test
// clock, push texts, settings, and state migration between 1.0.0 and 1.1.0.
#include <string>

#include <gtest/gtest.h>

#include "loaded_plugin.h"

namespace switchboard::plugins::testing {
namespace {

using plugin::Kind;
using plugin::OfflinePlugin;

constexpr const char* kAlice = "+15550000001";
constexpr const char* kBob = "+15550000002";
constexpr const char* kCarol = "+15550000003";
constexpr std::int64_t kThirtyDaysMs = 30ll * 86400 * 1000;

class OfflinePolicyTest : public ::testing::Test {
 protected:
  PluginPtr<OfflinePlugin> load(const char* path,
                                const std::vector<plugin::Plugin::Setting>& settings = {}) {
    return loadPlugin<OfflinePlugin>(path, Kind::offline, host, settings);
  }

  TestHost host;
  PluginPtr<OfflinePlugin> offline = load(SWITCHBOARD_OFFLINE_PLUGIN);
};

TEST_F(OfflinePolicyTest, MessagesExpireThirtyDaysAfterTheyAreQueued) {
  const auto policy = offline->onQueued(kBob, kAlice, 1);
  EXPECT_EQ(policy.expiresAtMs, host.nowMs() + kThirtyDaysMs);
  auto shortLived = load(SWITCHBOARD_OFFLINE_PLUGIN, {{"ttl-seconds", "3600"}});
  EXPECT_EQ(shortLived->onQueued(kBob, kAlice, 1).expiresAtMs, host.nowMs() + 3'600'000);
}

TEST_F(OfflinePolicyTest, TheFirstQueuedMessagePushesNamingTheSender) {
  const auto policy = offline->onQueued(kBob, kAlice, 1);
  EXPECT_TRUE(policy.push);
  EXPECT_EQ(policy.pushText, "New message from +15550000001");
}

TEST_F(OfflinePolicyTest, ABurstMakesOnePushUntilTheIntervalPasses) {
  EXPECT_TRUE(offline->onQueued(kBob, kAlice, 1).push);
  const auto second = offline->onQueued(kBob, kCarol, 2);
  EXPECT_FALSE(second.push);
  EXPECT_EQ(second.pushText, "");
  host.advanceSeconds(60);  // exactly the interval: not more than it
  EXPECT_FALSE(offline->onQueued(kBob, kAlice, 3).push);
  EXPECT_TRUE(offline->onQueued(kCarol, kAlice, 5).push);  // never pushed to carol
  host.advanceSeconds(1);
  const auto later = offline->onQueued(kBob, kAlice, 4);
  EXPECT_TRUE(later.push);
  EXPECT_EQ(later.pushText, "4 new messages");
  EXPECT_FALSE(offline->onQueued(kBob, kAlice, 5).push);
  EXPECT_EQ(host.counter("offline_push"), 3u);
  EXPECT_EQ(host.counter("offline_push_throttled"), 3u);
}

TEST_F(OfflinePolicyTest, AFirstMessageAfterTheQueueDrainedAlwaysPushes) {
  EXPECT_TRUE(offline->onQueued(kBob, kAlice, 1).push);
  host.advanceSeconds(5);  // bob logged in and drained; a new first message arrives
  EXPECT_TRUE(offline->onQueued(kBob, kCarol, 1).push);
}

TEST_F(OfflinePolicyTest, PushIntervalIsASetting) {
  auto chatty = load(SWITCHBOARD_OFFLINE_PLUGIN, {{"push-interval-seconds", "0"}});
  EXPECT_TRUE(chatty->onQueued(kBob, kAlice, 1).push);
  EXPECT_TRUE(chatty->onQueued(kBob, kAlice, 2).push);
  auto quiet = load(SWITCHBOARD_OFFLINE_PLUGIN, {{"push-interval-seconds", "3600"}});
  EXPECT_TRUE(quiet->onQueued(kBob, kAlice, 1).push);
  host.advanceSeconds(600);
  EXPECT_FALSE(quiet->onQueued(kBob, kAlice, 2).push);
  host.advanceSeconds(3001);
  EXPECT_TRUE(quiet->onQueued(kBob, kAlice, 3).push);
}

TEST_F(OfflinePolicyTest, ConfigureRefusesUnknownKeysAndBadValues) {
  EXPECT_NE(offline->configure({{"ttl", "60"}}).find("unknown setting \"ttl\""), std::string::npos);
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"ttl-seconds", "0"},
                                                        {"ttl-seconds", "30d"},
                                                        {"push-interval-seconds", "-5"},
                                                        {"push-interval-seconds", "86401"}}) {
    const std::string refused = offline->configure({{key, value}});
    EXPECT_NE(refused.find("bad value \"" + value + "\" for " + key), std::string::npos) << refused;
  }
  EXPECT_EQ(offline->onQueued(kBob, kAlice, 1).expiresAtMs, host.nowMs() + kThirtyDaysMs);
}

TEST_F(OfflinePolicyTest, PushTimesCrossVersionsBothWaysAndOldOnesArePruned) {
  EXPECT_TRUE(offline->onQueued(kBob, kAlice, 1).push);
  host.advanceSeconds(30);
  EXPECT_TRUE(offline->onQueued(kCarol, kAlice, 1).push);
  const std::string v1State = offline->exportState();
  EXPECT_EQ(v1State.substr(0, 4), "SBO1");

  auto next = load(SWITCHBOARD_OFFLINE_PLUGIN_NEXT);
  next->importState("1.0.0", v1State);
  const std::string v2State = next->exportState();
  EXPECT_EQ(v2State.substr(0, 4), "SBO2");
  EXPECT_LT(v2State.size(), v1State.size());
  auto back = load(SWITCHBOARD_OFFLINE_PLUGIN);
  back->importState("1.1.0", v2State);
  EXPECT_EQ(back->exportState(), v1State);

  EXPECT_FALSE(next->onQueued(kBob, kAlice, 2).push);  // pushed on 1.0.0 30 s ago
  EXPECT_FALSE(back->onQueued(kCarol, kAlice, 2).push);
  host.advanceSeconds(31);  // bob's push is now 61 s old: it no longer matters
  const std::string pruned = back->exportState();
  EXPECT_LT(pruned.size(), v1State.size());
  EXPECT_EQ(pruned.find(kBob), std::string::npos);
  EXPECT_NE(pruned.find(kCarol), std::string::npos);
}

TEST_F(OfflinePolicyTest, SelfTestPassesOnBothBuilds) {
  const auto result = offline->selfTest();
  EXPECT_TRUE(result.ok) << result.message;
  const auto nextResult = load(SWITCHBOARD_OFFLINE_PLUGIN_NEXT)->selfTest();
  EXPECT_TRUE(nextResult.ok) << nextResult.message;
}

}  // namespace
}  // namespace switchboard::plugins::testing
