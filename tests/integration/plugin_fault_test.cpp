// A plugin version that fails in production, end to end: the real host binary,
// the version loaded over the real admin socket (ctl::AdminClient, what sbctl
// uses), phones talking through it.
//   - every call throws: probation rolls it back by itself, and messages flow again;
//   - start() throws: the swap is refused and the old version never stops serving.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "admin_client.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;
using ::testing::HasSubstr;

std::string routingVersion(ctl::AdminClient& admin) {
  for (const auto& plugin : admin.plugins()) {
    if (plugin.kind == "routing") return plugin.version;
  }
  return "";
}

TEST(PluginFault, ProbationRollsBackAVersionWhoseCallsThrow) {
  RunningHost host({"--probation-seconds", "600", "--probation-errors", "3"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550001101");
  RecordingPhone b(host.clientOptions(), "+15550001102");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  a.client().send(b.number(), "before");
  ASSERT_TRUE(b.waitForMessages(1));

  ctl::AdminClientOptions options;
  options.socketPath = host.adminSocket().string();
  ctl::AdminClient admin(options);
  auto loaded = admin.loadPlugin("routing", FAULTY_ROUTING_THROWS_SO);
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.fromVersion, "1.0.0");
  EXPECT_EQ(loaded.toVersion, "1.0.9");

  // Every send is refused with the plugin's failure, and stores nothing, until
  // the fourth error (more than 3) makes probation roll the version back.
  std::vector<std::string> refusals;
  bool rolledBack = waitUntil([&] {
    try {
      a.client().send(b.number(), "during " + std::to_string(refusals.size()));
      return true;  // routed again: the old version is back
    } catch (const ClientError& e) {
      EXPECT_EQ(e.kind(), ClientError::Kind::refused) << e.what();
      refusals.push_back(e.what());
      return false;
    }
  });
  ASSERT_TRUE(rolledBack) << "the throwing version was never rolled back";
  ASSERT_GE(refusals.size(), 4u);
  for (const auto& refusal : refusals) {
    EXPECT_THAT(refusal, HasSubstr("routing plugin failed"));
    EXPECT_THAT(refusal, HasSubstr("faulty routing is broken"));
  }
  EXPECT_EQ(routingVersion(admin), "1.0.0");

  // The manager writes the rollback's ledger row just after the old version
  // serves again: a send can get through before the row is there.
  ASSERT_TRUE(waitUntil([&] {
    auto newest = admin.pluginHistory("routing", 1);
    return !newest.empty() && newest[0].actor == "probation";
  }));
  auto history = admin.pluginHistory("routing", 2);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].actor, "probation");
  EXPECT_EQ(history[0].result, "rolled_back");
  EXPECT_EQ(history[0].fromVersion, "1.0.9");
  EXPECT_EQ(history[0].toVersion, "1.0.0");
  EXPECT_THAT(history[0].reason, HasSubstr("probation: 1.0.9 had more than 3 errors"));
  EXPECT_EQ(history[1].actor, "admin");  // loaded over the admin socket
  EXPECT_EQ(history[1].toVersion, "1.0.9");

  // What b got: "before" and the one send that went through after the rollback,
  // nothing of the refused ones; nobody was disconnected.
  ASSERT_TRUE(b.waitForMessages(2));
  a.client().send(b.number(), "after");
  ASSERT_TRUE(b.waitForMessages(3));
  EXPECT_EQ(
      bodiesOf(b.messages()),
      (std::vector<std::string>{"before", "during " + std::to_string(refusals.size()), "after"}));
  EXPECT_EQ(a.disconnects(), 0u);
  EXPECT_EQ(b.disconnects(), 0u);
}

TEST(PluginFault, AStartThatThrowsLeavesTheOldVersionServing) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550001111");
  RecordingPhone b(host.clientOptions(), "+15550001112");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());

  ctl::AdminClientOptions options;
  options.socketPath = host.adminSocket().string();
  ctl::AdminClient admin(options);
  std::vector<std::string> steps;
  auto refused =
      admin.loadPlugin("routing", FAULTY_ROUTING_START_THROWS_SO,
                       [&](const std::string& step, const std::string&) { steps.push_back(step); });
  EXPECT_FALSE(refused.ok);
  EXPECT_THAT(refused.error, HasSubstr("faulty routing refuses to start"));
  // It got as far as the swap, and no further (no probation).
  EXPECT_EQ(steps, (std::vector<std::string>{"copy", "abi-check", "canary", "swap", "refused"}));
  EXPECT_EQ(routingVersion(admin), "1.0.0");
  for (const auto& plugin : admin.plugins()) {
    if (plugin.kind != "routing") continue;
    EXPECT_EQ(plugin.state, "serving");
    ASSERT_EQ(plugin.versions.size(), 1u);
    EXPECT_EQ(plugin.versions[0].version, "1.0.0");
  }
  auto history = admin.pluginHistory("routing", 1);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].result, "rejected");
  EXPECT_EQ(history[0].toVersion, "1.0.8");

  // The old version routes as before.
  a.client().send(b.number(), "still routed");
  ASSERT_TRUE(b.waitForMessages(1));
  EXPECT_EQ(b.messages().at(0).body, "still routed");
  EXPECT_EQ(a.disconnects(), 0u);
}

}  // namespace
}  // namespace switchboard::integration
