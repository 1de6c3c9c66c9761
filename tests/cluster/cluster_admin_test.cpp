// Plugin operations across a cluster (docs/cluster.md, "Operating a cluster"):
// real host processes joined by a real nats-server, driven through one node's
// admin socket with the admin client sbctl and the Python module use. A load or
// rollback forwarded to one node changes that node only; "all" changes every
// node; a target's refusal comes back as its own error text; an unknown node
// name is refused; a node that does not answer is named; and a rolling upgrade
// (`sbctl cluster upgrade`) passes node by node while phones on every node
// stay connected and every message sent meanwhile arrives once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "admin_client.h"
#include "nats_server.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using switchboard::ctl::AdminClient;
using switchboard::ctl::AdminClientOptions;
using switchboard::ctl::AdminError;
using switchboard::ctl::NodeOperation;
using switchboard::testing::NatsServer;

const std::string kRoutingNext =
    std::string(SWITCHBOARD_PLUGIN_DIR) + "/routing/librouting-next.so";
constexpr std::chrono::seconds kNodeTimeout{120};

using Ran = switchboard::testing::CommandRun;
using switchboard::testing::runCommand;

class ClusterAdmin : public ::testing::Test {
 protected:
  void SetUp() override { nats.start(); }

  // Starts nodes with these names and waits until each lists all of them. By
  // default a one-second probation window, so --wait-probation is quick.
  void startNodes(const std::vector<std::string>& names,
                  const std::vector<std::string>& probation = {"--probation-seconds", "1"}) {
    for (const auto& name : names) {
      std::vector<std::string> args{"--cluster", nats.url(), "--node-name", name};
      args.insert(args.end(), probation.begin(), probation.end());
      auto node = std::make_unique<RunningHost>(args);
      node->start();
      nodes.push_back(std::move(node));
    }
    for (const auto& node : nodes) {
      auto admin = adminOf(*node);
      ASSERT_TRUE(waitUntil([&] { return admin->cluster().nodes.size() == names.size(); }))
          << node->log();
    }
  }

  std::unique_ptr<AdminClient> adminOf(const RunningHost& node) {
    AdminClientOptions options;
    options.socketPath = node.adminSocket().string();
    return std::make_unique<AdminClient>(options);
  }

  std::string routingVersion(const RunningHost& node) {
    for (const auto& plugin : adminOf(node)->plugins()) {
      if (plugin.kind == "routing") return plugin.version;
    }
    return "";
  }

  NatsServer nats;
  std::vector<std::unique_ptr<RunningHost>> nodes;
};

TEST_F(ClusterAdmin, ALoadOnBThroughAsSocketChangesBOnly) {
  startNodes({"a", "b"});
  auto admin = adminOf(*nodes[0]);
  auto results = admin->loadPluginOnNodes("b", "routing", kRoutingNext, false, kNodeTimeout);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].node, "b");
  EXPECT_TRUE(results[0].answered);
  EXPECT_TRUE(results[0].result.ok) << results[0].result.error;
  EXPECT_EQ(results[0].result.fromVersion, "1.0.0");
  EXPECT_EQ(results[0].result.toVersion, "1.1.0");
  EXPECT_EQ(results[0].result.sha256.size(), 64u);

  EXPECT_EQ(routingVersion(*nodes[1]), "1.1.0");
  EXPECT_EQ(routingVersion(*nodes[0]), "1.0.0");
  // b's own ledger has it, with who asked.
  auto ledger = adminOf(*nodes[1])->pluginHistory("routing", 1);
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger[0].actor, "admin via a");
  EXPECT_EQ(ledger[0].toVersion, "1.1.0");
  // And the registry shows it, once b's next heartbeat is in.
  EXPECT_TRUE(waitUntil([&] {
    for (const auto& node : admin->cluster().nodes) {
      if (node.name == "b") return node.pluginVersions.find("routing=1.1.0") != std::string::npos;
    }
    return false;
  }));
}

TEST_F(ClusterAdmin, AllLoadsOnEveryNodeAndReportsEachByName) {
  startNodes({"a", "b", "c"});
  auto results =
      adminOf(*nodes[1])->loadPluginOnNodes("all", "routing", kRoutingNext, false, kNodeTimeout);
  ASSERT_EQ(results.size(), 3u);
  const char* names[] = {"a", "b", "c"};
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].node, names[i]);
    EXPECT_TRUE(results[i].answered);
    EXPECT_TRUE(results[i].result.ok) << results[i].result.error;
    EXPECT_EQ(results[i].result.toVersion, "1.1.0");
  }
  for (const auto& node : nodes) EXPECT_EQ(routingVersion(*node), "1.1.0");
}

TEST_F(ClusterAdmin, TheTargetsOwnErrorComesBack) {
  startNodes({"a", "b"});
  auto admin = adminOf(*nodes[0]);
  // A file that is not there on b: the text b's admin socket would give.
  auto missing = admin->loadPluginOnNodes("b", "routing", "/nonexistent/librouting-next.so", false,
                                          kNodeTimeout);
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_TRUE(missing[0].answered);
  EXPECT_FALSE(missing[0].result.ok);
  EXPECT_EQ(missing[0].result.error, "no file /nonexistent/librouting-next.so");

  // A library of the wrong ABI: refused by b's abi-check, in b's ledger.
  auto wrongAbi =
      admin->loadPluginOnNodes("b", "routing", COUNTER_WRONG_ABI_SO, false, kNodeTimeout);
  ASSERT_EQ(wrongAbi.size(), 1u);
  EXPECT_TRUE(wrongAbi[0].answered);
  EXPECT_FALSE(wrongAbi[0].result.ok);
  EXPECT_EQ(wrongAbi[0].result.error,
            "canary rejected: ABI version mismatch: library has 999, host expects 1");
  auto ledger = adminOf(*nodes[1])->pluginHistory("routing", 1);
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger[0].result, "rejected");

  // A kind that does not exist: the sentence of the admin protocol.
  try {
    admin->loadPluginOnNodes("b", "routin", kRoutingNext, false, kNodeTimeout);
    FAIL() << "an unknown kind was accepted";
  } catch (const AdminError& e) {
    EXPECT_STREQ(e.what(), "no plugin kind 'routin': expected routing, auth, presence or offline");
  }
  EXPECT_EQ(routingVersion(*nodes[1]), "1.0.0");
}

TEST_F(ClusterAdmin, AnUnknownNodeNameIsRefused) {
  startNodes({"a", "b"});
  auto admin = adminOf(*nodes[0]);
  try {
    admin->loadPluginOnNodes("zz", "routing", kRoutingNext, false, kNodeTimeout);
    FAIL() << "a node name not in the registry was accepted";
  } catch (const AdminError& e) {
    EXPECT_STREQ(e.what(), "no node 'zz' in the cluster (nodes: a, b)");
  }
  try {
    admin->rollbackPluginOnNodes("zz", "routing", "", kNodeTimeout);
    FAIL() << "a node name not in the registry was accepted";
  } catch (const AdminError& e) {
    EXPECT_STREQ(e.what(), "no node 'zz' in the cluster (nodes: a, b)");
  }
  Ran viaSbctl = runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[0]->adminSocket().string(),
                             "plugin", "load", "routing", kRoutingNext, "--node", "zz"});
  EXPECT_EQ(WEXITSTATUS(viaSbctl.status), 1) << viaSbctl.output;
  EXPECT_EQ(viaSbctl.output, "sbctl: no node 'zz' in the cluster (nodes: a, b)\n");
}

TEST_F(ClusterAdmin, RollbackOnOneNode) {
  startNodes({"a", "b"});
  auto admin = adminOf(*nodes[0]);
  auto all = admin->loadPluginOnNodes("all", "routing", kRoutingNext, false, kNodeTimeout);
  ASSERT_EQ(all.size(), 2u);
  ASSERT_TRUE(all[0].result.ok && all[1].result.ok);

  auto back = admin->rollbackPluginOnNodes("b", "routing", "", kNodeTimeout);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(back[0].answered);
  EXPECT_TRUE(back[0].result.ok) << back[0].result.error;
  EXPECT_EQ(back[0].result.fromVersion, "1.1.0");
  EXPECT_EQ(back[0].result.toVersion, "1.0.0");
  EXPECT_EQ(routingVersion(*nodes[1]), "1.0.0");
  EXPECT_EQ(routingVersion(*nodes[0]), "1.1.0");

  // A version b does not keep: b's own refusal.
  auto refused = admin->rollbackPluginOnNodes("b", "routing", "9.9.9", kNodeTimeout);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_FALSE(refused[0].result.ok);
  EXPECT_EQ(refused[0].result.error,
            "version 9.9.9 of routing is not loaded (loaded: 1.0.0, 1.1.0)");

  // The same through sbctl: a refusal is exit 1, with the node's reason.
  Ran viaSbctl = runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[0]->adminSocket().string(),
                             "plugin", "rollback", "routing", "--to", "9.9.9", "--node", "b"});
  EXPECT_EQ(WEXITSTATUS(viaSbctl.status), 1) << viaSbctl.output;
  EXPECT_NE(viaSbctl.output.find(
                "sbctl: b: version 9.9.9 of routing is not loaded (loaded: 1.0.0, 1.1.0)\n"),
            std::string::npos)
      << viaSbctl.output;
  // And a rollback of a to 1.0.0 with --json: one row per node.
  Ran json = runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[1]->adminSocket().string(), "--json",
                         "plugin", "rollback", "routing", "--node", "a"});
  EXPECT_EQ(json.status, 0) << json.output;
  auto rows = nlohmann::json::parse(json.output);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["node"], "a");
  EXPECT_EQ(rows[0]["answered"], true);
  EXPECT_EQ(rows[0]["ok"], true);
  EXPECT_EQ(rows[0]["toVersion"], "1.0.0");
  EXPECT_EQ(routingVersion(*nodes[0]), "1.0.0");
}

TEST_F(ClusterAdmin, ANodeThatDoesNotAnswerIsNamed) {
  startNodes({"a", "b"});
  auto admin = adminOf(*nodes[0]);
  // b stays in the registry (its record outlives it by the TTL) but cannot
  // answer. A rollback with nothing to go back to: a answers at once, with its
  // own refusal, well within the time-out even on a loaded machine.
  ASSERT_EQ(::kill(nodes[1]->pid(), SIGSTOP), 0);
  auto results = admin->rollbackPluginOnNodes("all", "routing", "", std::chrono::seconds(5));
  ASSERT_EQ(::kill(nodes[1]->pid(), SIGCONT), 0);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].node, "a");
  EXPECT_TRUE(results[0].answered);
  EXPECT_FALSE(results[0].result.ok);
  EXPECT_EQ(results[0].result.error, "no previous routing version to roll back to");
  EXPECT_EQ(results[1].node, "b");
  EXPECT_FALSE(results[1].answered);
  EXPECT_FALSE(results[1].result.ok);
  EXPECT_EQ(results[1].result.error, "node b did not answer within 5 s");
}

TEST_F(ClusterAdmin, ASingleNodeRefusesNode) {
  RunningHost single;
  single.start();
  try {
    adminOf(single)->loadPluginOnNodes("b", "routing", kRoutingNext, false, kNodeTimeout);
    FAIL() << "a single node forwarded a load";
  } catch (const AdminError& e) {
    EXPECT_STREQ(e.what(),
                 "this host is a single node: --node needs a host started with --cluster");
  }
}

// The documented rolling upgrade, with a phone on each node sending round the
// ring all the while: no phone is disconnected, and every message arrives
// once, in order.
TEST_F(ClusterAdmin, ARollingUpgradePassesNodeByNodeWhilePhonesKeepTalking) {
  startNodes({"a", "b", "c"});
  std::vector<std::unique_ptr<RecordingPhone>> phones;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    phones.push_back(std::make_unique<RecordingPhone>(nodes[i]->clientOptions(),
                                                      "+1555000930" + std::to_string(i)));
    phones.back()->registerAndLogin(nodes[i]->sms());
  }

  std::atomic<bool> upgrading{true};
  std::vector<std::size_t> sent(phones.size(), 0);
  std::vector<std::string> failures(phones.size());
  std::vector<std::thread> senders;
  for (std::size_t i = 0; i < phones.size(); ++i) {
    senders.emplace_back([&, i] {
      RecordingPhone& from = *phones[i];
      const std::string to = phones[(i + 1) % phones.size()]->number();
      // At least a few before, during and after; each waits for its "sent" tick.
      try {
        while (upgrading || sent[i] < 5) {
          from.client().send(to, "ring " + std::to_string(sent[i]));
          ++sent[i];
        }
      } catch (const std::exception& e) {
        failures[i] = e.what();
      }
    });
  }
  Ran upgrade =
      runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[0]->adminSocket().string(), "cluster",
                  "upgrade", "routing", kRoutingNext, "--node-timeout", "120"});
  upgrading = false;
  for (auto& sender : senders) sender.join();
  for (const auto& failure : failures) EXPECT_EQ(failure, "") << "a send failed";

  EXPECT_EQ(upgrade.status, 0) << upgrade.output;
  EXPECT_NE(upgrade.output.find("a: 1.0.0 -> 1.1.0, probation passed\n"
                                "b: 1.0.0 -> 1.1.0, probation passed\n"
                                "c: 1.0.0 -> 1.1.0, probation passed\n"
                                "routing: every node upgraded\n"),
            std::string::npos)
      << upgrade.output;
  for (const auto& node : nodes) EXPECT_EQ(routingVersion(*node), "1.1.0");

  for (std::size_t i = 0; i < phones.size(); ++i) {
    RecordingPhone& to = *phones[(i + 1) % phones.size()];
    ASSERT_TRUE(to.waitForMessages(sent[i])) << to.number();
    auto received = to.messages();
    ASSERT_EQ(received.size(), sent[i]) << to.number();
    for (std::size_t n = 0; n < received.size(); ++n) {
      EXPECT_EQ(received[n].body, "ring " + std::to_string(n)) << to.number();
    }
  }
  for (const auto& phone : phones) EXPECT_EQ(phone->disconnects(), 0u) << phone->number();
}

// A version every node refuses: the upgrade stops at the first node, which
// keeps its version, and touches no other.
TEST_F(ClusterAdmin, ARollingUpgradeStopsAtTheFirstFailure) {
  startNodes({"a", "b", "c"});
  Ran upgrade = runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[1]->adminSocket().string(),
                            "cluster", "upgrade", "routing", COUNTER_WRONG_ABI_SO});
  EXPECT_NE(upgrade.status, 0) << upgrade.output;
  EXPECT_NE(
      upgrade.output.find("a: failed: canary rejected: ABI version mismatch: library has 999, host "
                          "expects 1\n"),
      std::string::npos)
      << upgrade.output;
  EXPECT_NE(upgrade.output.find("sbctl: upgrade stopped at a; not upgraded: b c\n"),
            std::string::npos)
      << upgrade.output;
  for (const auto& node : nodes) EXPECT_EQ(routingVersion(*node), "1.0.0");
  // b and c were not asked: their newest ledger row is still the start's load.
  for (std::size_t i = 1; i < nodes.size(); ++i) {
    auto ledger = adminOf(*nodes[i])->pluginHistory("routing", 1);
    ASSERT_EQ(ledger.size(), 1u);
    EXPECT_EQ(ledger[0].result, "loaded");
  }
}

// A version whose every call throws: on the first node its probation fails (the
// node rolls it back by itself), the upgrade says so and stops, and the next
// node is never asked.
TEST_F(ClusterAdmin, ARollingUpgradeStopsWhenProbationFailsOnANode) {
  startNodes({"a", "b"}, {"--probation-seconds", "600", "--probation-errors", "3"});
  RecordingPhone sender(nodes[0]->clientOptions(), "+15550009401");
  RecordingPhone recipient(nodes[0]->clientOptions(), "+15550009402");
  sender.registerAndLogin(nodes[0]->sms());
  recipient.registerAndLogin(nodes[0]->sms());

  auto upgrade = std::async(std::launch::async, [&] {
    return runCommand({SWITCHBOARD_SBCTL, "--socket", nodes[1]->adminSocket().string(), "cluster",
                       "upgrade", "routing", FAULTY_ROUTING_THROWS_SO});
  });
  ASSERT_TRUE(waitUntil([&] { return routingVersion(*nodes[0]) == "1.0.9"; }));
  // Sends on a fail until the fourth error (more than 3) rolls the version back.
  std::size_t refused = 0;
  ASSERT_TRUE(waitUntil([&] {
    try {
      sender.client().send(recipient.number(), "probe");
      return routingVersion(*nodes[0]) == "1.0.0";
    } catch (const client::ClientError&) {
      ++refused;
      return false;
    }
  }));
  EXPECT_GE(refused, 4u);
  Ran ran = upgrade.get();
  EXPECT_NE(ran.status, 0) << ran.output;
  EXPECT_NE(ran.output.find("a: failed: probation failed: routing 1.0.9 was rolled back to 1.0.0 "
                            "(probation: 1.0.9 had more than 3 errors"),
            std::string::npos)
      << ran.output;
  EXPECT_NE(ran.output.find("sbctl: upgrade stopped at a; not upgraded: b\n"), std::string::npos)
      << ran.output;
  EXPECT_EQ(routingVersion(*nodes[0]), "1.0.0");
  EXPECT_EQ(routingVersion(*nodes[1]), "1.0.0");
  auto ledger = adminOf(*nodes[1])->pluginHistory("routing", 1);
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger[0].result, "loaded");
}

}  // namespace
}  // namespace switchboard::integration
