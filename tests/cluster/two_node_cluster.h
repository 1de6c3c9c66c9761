// A GoogleTest fixture: a nats-server of the test's own (JetStream, a temporary
// store, a free port) and two real host processes, nodes "a" and "b", joined
// by it (--cluster, debug logs). SetUp returns once both nodes have logged
// that they are connected to NATS (registration needs the cluster's
// directory). Members are the test's to stop, kill and restart; the fixture's
// destructor stops whatever still runs. withOwnLink gives a test a NATS
// connection of its own, to play another node or client.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/nats_link.h"
#include "nats_server.h"
#include "net/network_thread.h"
#include "running_host.h"

namespace switchboard::integration {

class TwoNodeCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    nats.start();
    a = makeNode("a");
    b = makeNode("b");
  }

  std::unique_ptr<RunningHost> makeNode(const std::string& name) {
    auto node = std::make_unique<RunningHost>(std::vector<std::string>{
        "--cluster", nats.url(), "--node-name", name, "--log-level", "debug"});
    node->start();
    EXPECT_TRUE(waitUntil([&] {
      return node->log().find("cluster: connected to NATS") != std::string::npos;
    })) << node->log();
    return node;
  }

  // Runs `use` with a connection to the fixture's nats-server of the test's
  // own (client name `name`, on a network thread of its own), once it is
  // connected; both are gone when `use` returns. A failed wait for the
  // connection is a fatal failure: the caller checks HasFatalFailure().
  void withOwnLink(const std::string& name, const std::function<void(cluster::NatsLink&)>& use) {
    net::NetworkThread thread(name);
    thread.start();
    {
      cluster::NatsLinkOptions options;
      options.url = nats.url();
      options.clientName = name;
      cluster::NatsLink link(options, thread);
      ASSERT_TRUE(waitUntil([&] { return link.isConnected(); }));
      use(link);
    }
    thread.stop();
  }

  switchboard::testing::NatsServer nats;
  std::unique_ptr<RunningHost> a;
  std::unique_ptr<RunningHost> b;
};

}  // namespace switchboard::integration
