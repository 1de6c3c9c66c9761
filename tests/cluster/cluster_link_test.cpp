// The NATS link, the node registry and ClusterNode against a real nats-server:
// starting without NATS, losing it, getting it back.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "cluster/cluster_node.h"
#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "cluster/node_registry.h"
#include "nats_server.h"
#include "net/network_thread.h"

namespace switchboard::cluster {
namespace {

using testing::NatsServer;
using testing::waitUntil;

class ClusterLinkTest : public ::testing::Test {
 protected:
  void SetUp() override { owner.start(); }
  void TearDown() override { owner.stop(); }
  NatsLinkOptions linkOptions() {
    NatsLinkOptions options;
    options.url = nats.url();
    options.clientName = "test";
    return options;
  }
  NatsServer nats;
  net::NetworkThread owner{"owner"};
};

TEST(ClusterRecordsTest, KeyTokensRoundTripAndStayInTheNatsAlphabet) {
  for (std::string text : {"+15550001", "a.b_c", "group-7", "", "é/ü"}) {
    std::string token = encodeKeyToken(text);
    EXPECT_EQ(token.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789-_"),
              std::string::npos)
        << token;
    ASSERT_TRUE(decodeKeyToken(token).has_value()) << token;
    EXPECT_EQ(*decodeKeyToken(token), text);
  }
  EXPECT_EQ(encodeKeyToken("+15550001"), "_2B15550001");
  EXPECT_FALSE(decodeKeyToken("_2").has_value());
  EXPECT_FALSE(decodeKeyToken("a.b").has_value());
}

TEST_F(ClusterLinkTest, AMalformedUrlIsRefusedWithTheUrlInTheError) {
  NatsLinkOptions options;
  options.url = "not a url at all";
  try {
    NatsLink link(options, owner);
    FAIL() << "a malformed URL was accepted";
  } catch (const ClusterError& e) {
    EXPECT_NE(std::string(e.what()).find("not a url at all"), std::string::npos) << e.what();
  }
}

TEST_F(ClusterLinkTest, StartsDegradedWithoutNatsThenConnectsWhenItComes) {
  NatsLink link(linkOptions(), owner);
  std::mutex mutex;
  std::vector<LinkState> heard;
  std::atomic<bool> heardOnOwner{true};
  link.addStateListener([&](LinkState state) {
    if (!owner.isCurrent()) heardOnOwner = false;
    std::lock_guard lock(mutex);
    heard.push_back(state);
  });
  std::atomic<int> catchUps{0};
  link.addReconnectJob([&] {
    if (!link.onWorker()) heardOnOwner = false;
    ++catchUps;
  });
  EXPECT_EQ(link.state(), LinkState::degraded);
  try {
    link.requireConnected();
    FAIL() << "a degraded link claimed to be connected";
  } catch (const ClusterError& e) {
    EXPECT_EQ(std::string(e.what()), "cluster degraded: NATS at " + nats.url() + " unreachable");
  }

  nats.start();
  ASSERT_TRUE(waitUntil([&] { return link.isConnected(); }));
  ASSERT_TRUE(waitUntil([&] { return catchUps.load() == 1; }));
  nats.stop();
  ASSERT_TRUE(waitUntil([&] { return !link.isConnected(); }));
  nats.start();
  ASSERT_TRUE(waitUntil([&] { return catchUps.load() == 2; }));
  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard lock(mutex);
    return heard.size() == 3;
  }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(heard, (std::vector<LinkState>{LinkState::connected, LinkState::degraded,
                                           LinkState::connected}));
  EXPECT_TRUE(heardOnOwner);
  EXPECT_EQ(link.disconnects(), 1u);
}

TEST_F(ClusterLinkTest, RegistryListsEveryNodeAndRefusesAnOlderTwin) {
  nats.start();
  NatsLink link(linkOptions(), owner);
  ASSERT_TRUE(waitUntil([&] { return link.isConnected(); }));
  NodeRegistry registry(link, std::chrono::seconds(30));
  NodeInfo a{"node-a", "127.0.0.1:7001", 3, "auth=1.0.0", 0, 100, 1, "0.1.0"};
  NodeInfo b{"node.b", "127.0.0.1:7002", 0, "", 0, 100, 2, "0.1.0"};
  registry.publish(a);
  registry.publish(b);
  registry.publish(a);  // a heartbeat rewrites the same record
  auto nodes = registry.list();
  ASSERT_EQ(nodes.size(), 2u);
  std::sort(nodes.begin(), nodes.end(), [](auto& x, auto& y) { return x.name < y.name; });
  EXPECT_EQ(nodes[0].name, "node-a");
  EXPECT_EQ(nodes[0].address, "127.0.0.1:7001");
  EXPECT_EQ(nodes[0].sessions, 3u);
  EXPECT_EQ(nodes[0].pluginVersions, "auth=1.0.0");
  EXPECT_GT(nodes[0].heardAtMs, 0);
  EXPECT_EQ(nodes[1].name, "node.b");

  // A newer process took node-a's name (a restart within the TTL): the old
  // one's next heartbeat is refused; the new one keeps the name.
  NodeInfo restarted = a;
  restarted.instance = 3;
  restarted.startedAtMs = 200;
  registry.publish(restarted);
  try {
    registry.publish(a);
    FAIL() << "an older twin overwrote the newer node's record";
  } catch (const ClusterError& e) {
    EXPECT_EQ(std::string(e.what()),
              "node name 'node-a' was taken by a newer process at 127.0.0.1:7001");
  }
  registry.remove("node.b", 2);
  nodes = registry.list();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].instance, 3u);
}

// Heartbeats rewrite every record while an operator lists the nodes (a rolling
// upgrade names each node from the listing): no listing may miss a node.
TEST_F(ClusterLinkTest, TheListingHasEveryNodeWhileTheirRecordsAreRewritten) {
  nats.start();
  NatsLink link(linkOptions(), owner);
  ASSERT_TRUE(waitUntil([&] { return link.isConnected(); }));
  NodeRegistry registry(link, std::chrono::seconds(30));
  std::vector<NodeInfo> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back({"n" + std::to_string(i), "127.0.0.1:700" + std::to_string(i), 0, "", 0, 100,
                     static_cast<std::uint64_t>(i + 1), "0.1.0"});
    registry.publish(nodes.back());
  }
  std::atomic<bool> done{false};
  std::thread heartbeats([&] {
    NodeRegistry writer(link, std::chrono::seconds(30));
    while (!done) {
      for (const auto& node : nodes) writer.publish(node);
    }
  });
  std::vector<std::string> wrong;
  for (int listing = 0; listing < 300; ++listing) {
    auto listed = registry.list();
    if (listed.size() != nodes.size()) {
      std::string names;
      for (const auto& node : listed) names += node.name + " ";
      wrong.push_back(names);
    }
  }
  done = true;
  heartbeats.join();
  EXPECT_TRUE(wrong.empty()) << wrong.size()
                             << " of 300 listings were wrong, first: " << wrong.front();
}

TEST_F(ClusterLinkTest, ANodeThatStopsHeartbeatingLeavesTheListingAfterTheTtl) {
  nats.start();
  NatsLink link(linkOptions(), owner);
  ASSERT_TRUE(waitUntil([&] { return link.isConnected(); }));
  NodeRegistry registry(link, std::chrono::seconds(1));
  registry.publish(NodeInfo{"gone", "127.0.0.1:7003", 0, "", 0, 1, 9, "0.1.0"});
  ASSERT_EQ(registry.list().size(), 1u);
  EXPECT_TRUE(waitUntil([&] { return registry.list().empty(); }));
}

TEST_F(ClusterLinkTest, ClusterNodeHeartbeatsSurvivesNatsRestartAndLeavesOnDestruction) {
  nats.start();
  NatsLink observer(linkOptions(), owner);
  ASSERT_TRUE(waitUntil([&] { return observer.isConnected(); }));
  NodeRegistry registry(observer, std::chrono::seconds(10));
  auto listed = [&](std::uint32_t sessions) {
    try {
      auto nodes = registry.list();
      return nodes.size() == 1 && nodes[0].name == "n1" && nodes[0].sessions == sessions;
    } catch (const ClusterError&) {
      return false;  // NATS still coming back
    }
  };
  std::atomic<std::uint32_t> sessions{4};
  {
    ClusterNodeOptions options{nats.url(),
                               "n1",
                               "127.0.0.1:7010",
                               "0.1.0",
                               std::chrono::milliseconds(100),
                               std::chrono::seconds(10)};
    ClusterNode node(options, NodeFacts{[&] { return sessions.load(); }, [] { return "x=1"; }},
                     owner);
    ASSERT_TRUE(waitUntil([&] { return listed(4); }));
    EXPECT_EQ(node.status().state, "connected");

    nats.kill();
    ASSERT_TRUE(waitUntil([&] { return node.status().state == "degraded"; }));
    sessions = 5;  // it keeps serving: the count moves while NATS is away
    nats.start();
    ASSERT_TRUE(waitUntil([&] { return node.status().state == "connected"; }));
    EXPECT_TRUE(waitUntil([&] { return listed(5); }));
    EXPECT_EQ(node.status().disconnects, 1u);
    EXPECT_EQ(node.status().reconnects, 1u);
  }
  ASSERT_TRUE(waitUntil([&] { return observer.isConnected(); }));
  EXPECT_TRUE(registry.list().empty());
}

}  // namespace
}  // namespace switchboard::cluster
