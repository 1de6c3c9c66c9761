// The routing plugin, loaded from its .so: destinations, counters, settings
// and state migration between the 1.0.0 and 1.1.0 builds.
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "loaded_plugin.h"
#include "state_codec.h"

namespace switchboard::plugins::testing {
namespace {

using plugin::Kind;
using plugin::RoutingPlugin;
using Destination = RoutingPlugin::Destination;

RoutingPlugin::Envelope envelopeTo(std::string to) {
  RoutingPlugin::Envelope envelope;
  envelope.from = "+15550000001";
  envelope.to = std::move(to);
  envelope.bodyBytes = 12;
  return envelope;
}

// Reads the five counters out of a format-1 (1.0.0) state blob.
std::vector<std::uint64_t> countersOf(const std::string& state) {
  StateReader reader(state, 'R', StateFormat::fixedWidth);
  std::vector<std::uint64_t> counters;
  for (int i = 0; i < 5; ++i) counters.push_back(reader.u64());
  reader.expectEnd();
  return counters;
}

class RoutingPolicyTest : public ::testing::Test {
 protected:
  TestHost host;
  PluginPtr<RoutingPlugin> routing =
      loadPlugin<RoutingPlugin>(SWITCHBOARD_ROUTING_PLUGIN, Kind::routing, host);
};

TEST_F(RoutingPolicyTest, OnlineRecipientGoesToItsLocalSession) {
  auto envelope = envelopeTo("+15550000002");
  envelope.recipientOnline = true;
  envelope.recipientNode = "node-b";  // a live local session wins over a stale registry entry
  EXPECT_EQ(routing->route(envelope).destination, Destination::localSession);
  EXPECT_EQ(host.counter("route_local_session"), 1u);
}

TEST_F(RoutingPolicyTest, RecipientOnAnotherNodeGoesThere) {
  auto envelope = envelopeTo("+15550000002");
  envelope.recipientNode = "node-b";
  const auto decision = routing->route(envelope);
  EXPECT_EQ(decision.destination, Destination::remoteNode);
  EXPECT_EQ(decision.node, "node-b");
}

TEST_F(RoutingPolicyTest, AbsentRecipientIsQueuedForMessagesAndReceipts) {
  auto envelope = envelopeTo("+15550000002");
  EXPECT_EQ(routing->route(envelope).destination, Destination::offlineQueue);
  envelope.payload = RoutingPlugin::Payload::receipt;
  EXPECT_EQ(routing->route(envelope).destination, Destination::offlineQueue);
  envelope.recipientOnline = true;
  EXPECT_EQ(routing->route(envelope).destination, Destination::localSession);
  EXPECT_EQ(host.counter("route_offline_queue"), 2u);
}

TEST_F(RoutingPolicyTest, SendersOwnGroupCopyIsDroppedButANoteToSelfIsNot) {
  auto envelope = envelopeTo("+15550000001");
  envelope.group = 42;
  envelope.recipientOnline = true;
  EXPECT_EQ(routing->route(envelope).destination, Destination::drop);
  envelope.group = 0;
  EXPECT_EQ(routing->route(envelope).destination, Destination::localSession);
  envelope.group = 42;
  envelope.to = "+15550000003";
  EXPECT_EQ(routing->route(envelope).destination, Destination::localSession);
}

TEST_F(RoutingPolicyTest, EmptyRecipientIsRejected) {
  const auto decision = routing->route(envelopeTo(""));
  EXPECT_EQ(decision.destination, Destination::reject);
  EXPECT_EQ(decision.error, "no recipient");
  EXPECT_EQ(host.counter("route_reject"), 1u);
}

TEST_F(RoutingPolicyTest, RefusesEverySetting) {
  const std::string refused = routing->configure({{"max-hops", "3"}});
  EXPECT_NE(refused.find("unknown setting \"max-hops\""), std::string::npos) << refused;
  EXPECT_EQ(routing->configure({}), "");
}

TEST_F(RoutingPolicyTest, CountsConcurrentCallsWithoutLosingAny) {
  constexpr int kThreads = 4;
  constexpr int kCalls = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto envelope = envelopeTo("+15550000002");
      for (int i = 0; i < kCalls; ++i) {
        envelope.recipientOnline = i % 2 == 0;
        routing->route(envelope);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto counters = countersOf(routing->exportState());
  EXPECT_EQ(counters[0], kThreads * kCalls / 2);
  EXPECT_EQ(counters[2], kThreads * kCalls / 2);
}

TEST_F(RoutingPolicyTest, CountersCrossToTheNextVersionAndBack) {
  auto envelope = envelopeTo("+15550000002");
  routing->route(envelope);  // offline
  envelope.recipientNode = "node-b";
  routing->route(envelope);  // remote
  routing->route(envelope);
  routing->route(envelopeTo(""));  // reject
  const std::string v1State = routing->exportState();
  EXPECT_EQ(countersOf(v1State), (std::vector<std::uint64_t>{0, 2, 1, 1, 0}));

  auto next = loadPlugin<RoutingPlugin>(SWITCHBOARD_ROUTING_PLUGIN_NEXT, Kind::routing, host);
  EXPECT_EQ(versionOf(next), "1.1.0");
  next->importState(versionOf(routing), v1State);
  next->route(envelopeTo(""));  // one more reject on the new version
  const std::string v2State = next->exportState();
  EXPECT_EQ(v2State.substr(0, 4), "SBR2");
  EXPECT_NE(v2State, v1State);

  auto back = loadPlugin<RoutingPlugin>(SWITCHBOARD_ROUTING_PLUGIN, Kind::routing, host);
  back->importState(versionOf(next), v2State);
  EXPECT_EQ(countersOf(back->exportState()), (std::vector<std::uint64_t>{0, 2, 1, 2, 0}));
}

TEST_F(RoutingPolicyTest, RefusesStateItCannotReadAndKeepsItsOwn) {
  routing->route(envelopeTo(""));
  const std::string before = routing->exportState();
  EXPECT_THROW(routing->importState("1.0.0", "garbage"), std::exception);
  EXPECT_THROW(routing->importState("2.0.0", before), std::exception);
  EXPECT_THROW(routing->importState("1.1.0", before), std::exception);  // a format-1 blob
  EXPECT_THROW(routing->importState("1.0.0", before.substr(0, before.size() - 1)), std::exception);
  EXPECT_EQ(routing->exportState(), before);
}

TEST_F(RoutingPolicyTest, SelfTestPassesOnBothBuilds) {
  const auto result = routing->selfTest();
  EXPECT_TRUE(result.ok) << result.message;
  auto next = loadPlugin<RoutingPlugin>(SWITCHBOARD_ROUTING_PLUGIN_NEXT, Kind::routing, host);
  const auto nextResult = next->selfTest();
  EXPECT_TRUE(nextResult.ok) << nextResult.message;
}

}  // namespace
}  // namespace switchboard::plugins::testing
