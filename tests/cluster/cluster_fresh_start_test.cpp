// A cluster's first moments (docs/cluster.md, "What happens on each failure"):
// several nodes joined to a nats-server that has never held their buckets, each
// registering its first phones the moment it is connected. Every node opens
// (creates or binds) the same buckets at once, and their first writes race the
// server setting those buckets up. Run many times over fresh servers: the race
// is a window of a few milliseconds. The same for the delivery stream
// (SB_INBOX): every node creates or binds it, then publishes at once.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_directory.h"
#include "cluster/delivery_transport.h"
#include "cluster/nats_link.h"
#include "nats_server.h"
#include "net/network_thread.h"

namespace switchboard::cluster {
namespace {

using testing::NatsServer;
using testing::waitUntil;

constexpr int kNodes = 3;
constexpr int kRounds = 12;

// What messaging's verify does for a new phone (cluster_phones.cpp): read
// the user, take a number, bind it, write the user over revision 0.
void registerFirstPhone(ClusterDirectory& directory, const std::string& phone) {
  if (directory.user(phone)) throw ClusterError(phone + " exists already");
  UserEntry user{phone, "key hash", "phone", 1000, 0};
  user.number = directory.allocate("user_number", 1, 2);
  directory.bindNumber(user.number, phone);
  if (!directory.writeUser(user)) throw ClusterError(phone + " was written by another node");
}

// A fresh nats-server (one that never held the cluster's buckets or stream)
// and kNodes links to it, each on a network thread of its own.
struct FreshNodes {
  FreshNodes() {
    nats.start();
    for (int n = 0; n < kNodes; ++n) {
      threads.push_back(std::make_unique<net::NetworkThread>("n" + std::to_string(n)));
      threads.back()->start();
      links.push_back(std::make_unique<NatsLink>(
          NatsLinkOptions{nats.url(), "n" + std::to_string(n)}, *threads.back()));
    }
  }
  ~FreshNodes() {
    links.clear();
    for (auto& thread : threads) thread->stop();
  }
  bool connected() {
    return waitUntil([&] {
      for (auto& link : links)
        if (!link->isConnected()) return false;
      return true;
    });
  }
  NatsServer nats;
  std::vector<std::unique_ptr<net::NetworkThread>> threads;
  std::vector<std::unique_ptr<NatsLink>> links;
};

// Runs `first(n)` for every node at once, on threads of their own started
// together (as nodes started by one script are); each node's error text, or
// "" when it succeeded.
std::vector<std::string> allAtOnce(const std::function<void(int)>& first) {
  std::atomic<int> ready{0};
  std::vector<std::string> errors(kNodes);
  std::vector<std::thread> nodes;
  for (int n = 0; n < kNodes; ++n) {
    nodes.emplace_back([&, n] {
      ++ready;
      while (ready < kNodes) std::this_thread::yield();
      try {
        first(n);
      } catch (const std::exception& e) {
        errors[n] = e.what();
      }
    });
  }
  for (auto& node : nodes) node.join();
  return errors;
}

// Adds a round's errors to `failures`.
void collect(std::vector<std::string>& failures, int round,
             const std::vector<std::string>& errors) {
  for (const std::string& error : errors) {
    if (!error.empty()) failures.push_back("round " + std::to_string(round) + ": " + error);
  }
}

std::string listed(const std::vector<std::string>& failures) {
  std::string all;
  for (const auto& failure : failures) all += failure + "\n";
  return std::to_string(failures.size()) + " of " + std::to_string(kRounds * kNodes) +
         " nodes failed:\n" + all;
}

TEST(FreshCluster, NodesRegisteringTheirFirstPhonesAtOnceAllSucceed) {
  std::vector<std::string> failures;
  for (int round = 0; round < kRounds; ++round) {
    FreshNodes fresh;
    ASSERT_TRUE(fresh.connected());
    std::vector<std::unique_ptr<ClusterDirectory>> directories;
    for (auto& link : fresh.links) directories.push_back(std::make_unique<ClusterDirectory>(*link));

    std::vector<std::string> errors = allAtOnce([&](int n) {
      for (int p = 0; p < 2; ++p) {
        registerFirstPhone(*directories[n], "+1555000" + std::to_string(n * 10 + p));
      }
    });
    collect(failures, round, errors);
    // Every phone got its own number, and each number names its phone.
    std::set<std::uint64_t> numbers;
    for (int n = 0; n < kNodes && errors[n].empty(); ++n) {
      for (int p = 0; p < 2; ++p) {
        std::string phone = "+1555000" + std::to_string(n * 10 + p);
        auto user = directories[0]->user(phone);
        ASSERT_TRUE(user.has_value()) << phone;
        EXPECT_TRUE(numbers.insert(user->number).second) << phone << " shares its number";
        EXPECT_EQ(directories[0]->phoneOfNumber(user->number), phone);
      }
    }
  }
  EXPECT_TRUE(failures.empty()) << listed(failures);
}

// The delivery stream: each node's first publish (and read) the moment it is
// connected, with every node creating or binding SB_INBOX at once.
TEST(FreshCluster, NodesPublishingTheirFirstEnvelopesAtOnceAllSucceed) {
  std::vector<std::string> failures;
  for (int round = 0; round < kRounds; ++round) {
    FreshNodes fresh;
    ASSERT_TRUE(fresh.connected());
    std::vector<std::unique_ptr<DeliveryTransport>> transports;
    for (int n = 0; n < kNodes; ++n) {
      DeliveryTransportOptions options;
      options.node = "n" + std::to_string(n);
      transports.push_back(std::make_unique<DeliveryTransport>(*fresh.links[n], options));
    }
    collect(failures, round, allAtOnce([&](int n) {
              Envelope e;
              e.sender = "+1555000" + std::to_string(n);
              e.recipient = "+1555009" + std::to_string(n);
              e.clientMsgId = "first";
              e.body = "hello";
              e.messageId = 1;
              PublishResult result = transports[n]->publish(e);
              auto waiting = transports[n]->pending(e.recipient, 0, 10);
              if (waiting.size() != 1 || waiting[0].serverId != result.serverId) {
                throw ClusterError("read back " + std::to_string(waiting.size()) + " envelopes");
              }
            }));
  }
  EXPECT_TRUE(failures.empty()) << listed(failures);
}

}  // namespace
}  // namespace switchboard::cluster
