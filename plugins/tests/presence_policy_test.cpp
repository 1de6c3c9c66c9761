// The presence plugin, loaded from its .so: visibility under both settings,
// counting, settings refusal, and state migration between 1.0.0 and 1.1.0.
#include <string>

#include <gtest/gtest.h>

#include "loaded_plugin.h"

namespace switchboard::plugins::testing {
namespace {

using plugin::Kind;
using plugin::PresencePlugin;

constexpr const char* kUser = "+15550000001";
constexpr const char* kWatcher = "+15550000002";

class PresencePolicyTest : public ::testing::Test {
 protected:
  PluginPtr<PresencePlugin> load(const char* path,
                                 const std::vector<plugin::Plugin::Setting>& settings = {}) {
    return loadPlugin<PresencePlugin>(path, Kind::presence, host, settings);
  }

  TestHost host;
  PluginPtr<PresencePlugin> presence = load(SWITCHBOARD_PRESENCE_PLUGIN);
};

TEST_F(PresencePolicyTest, ByDefaultOnlyMutualContactsSeeEachOther) {
  EXPECT_TRUE(presence->visible(kUser, kWatcher, true, true));
  EXPECT_FALSE(presence->visible(kUser, kWatcher, true, false));  // watcher knows user only
  EXPECT_FALSE(presence->visible(kUser, kWatcher, false, true));  // user knows watcher only
  EXPECT_FALSE(presence->visible(kUser, kWatcher, false, false));
  EXPECT_TRUE(presence->visible(kUser, kUser, false, false));  // one's own presence
  EXPECT_EQ(host.counter("presence_visible"), 2u);
  EXPECT_EQ(host.counter("presence_hidden"), 3u);
}

TEST_F(PresencePolicyTest, WithoutTheMutualRuleTheUsersContactsSee) {
  auto open = load(SWITCHBOARD_PRESENCE_PLUGIN, {{"require-mutual-contacts", "false"}});
  EXPECT_TRUE(open->visible(kUser, kWatcher, true, true));
  EXPECT_TRUE(open->visible(kUser, kWatcher, false, true));
  EXPECT_FALSE(open->visible(kUser, kWatcher, true, false));
  EXPECT_FALSE(open->visible(kUser, kWatcher, false, false));
  ASSERT_EQ(open->configure({{"require-mutual-contacts", "true"}}), "");
  EXPECT_FALSE(open->visible(kUser, kWatcher, false, true));
}

TEST_F(PresencePolicyTest, ConfigureRefusesUnknownKeysAndBadValues) {
  EXPECT_NE(presence->configure({{"mutual", "true"}}).find("unknown setting \"mutual\""),
            std::string::npos);
  const std::string refused = presence->configure({{"require-mutual-contacts", "sometimes"}});
  EXPECT_NE(refused.find("bad value \"sometimes\" for require-mutual-contacts"), std::string::npos)
      << refused;
  EXPECT_FALSE(presence->visible(kUser, kWatcher, false, true));  // still the default rule
}

TEST_F(PresencePolicyTest, CountersCrossVersionsBothWays) {
  presence->visible(kUser, kWatcher, true, true);
  presence->visible(kUser, kWatcher, false, false);
  presence->visible(kUser, kWatcher, false, false);
  const std::string v1State = presence->exportState();
  auto next = load(SWITCHBOARD_PRESENCE_PLUGIN_NEXT);
  next->importState("1.0.0", v1State);
  const std::string v2State = next->exportState();
  EXPECT_EQ(v1State.substr(0, 4), "SBP1");
  EXPECT_EQ(v2State, std::string("SBP2") + '\x02' + '\x01');  // compact: hidden, then visible
  auto back = load(SWITCHBOARD_PRESENCE_PLUGIN);
  back->importState("1.1.0", v2State);
  EXPECT_EQ(back->exportState(), v1State);
  EXPECT_THROW(back->importState("1.0.0", v2State), std::exception);
}

TEST_F(PresencePolicyTest, SelfTestPassesOnBothBuilds) {
  const auto result = presence->selfTest();
  EXPECT_TRUE(result.ok) << result.message;
  const auto nextResult = load(SWITCHBOARD_PRESENCE_PLUGIN_NEXT)->selfTest();
  EXPECT_TRUE(nextResult.ok) << nextResult.message;
}

}  // namespace
}  // namespace switchboard::plugins::testing
