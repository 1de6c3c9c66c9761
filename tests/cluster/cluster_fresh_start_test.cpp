// A cluster's first moments (docs/cluster.md, "What happens on each failure"):
// several nodes joined to a nats-server that has never held their buckets, each
// registering its first phones the moment it is connected. Every node opens
// (creates or binds) the same buckets at once, and their first writes race the
// server setting those buckets up. Run many times over fresh servers: the race
// is a window of a few milliseconds.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_directory.h"
#include "cluster/nats_link.h"
#include "nats_server.h"
#include "net/network_thread.h"

namespace switchboard::cluster {
namespace {

using testing::NatsServer;
using testing::waitUntil;

constexpr int kNodes = 3;
constexpr int kRounds = 12;

// What messaging's verify does for a new phone (cluster_messaging.cpp): read
// the user, take a number, bind it, write the user over revision 0.
void registerFirstPhone(ClusterDirectory& directory, const std::string& phone) {
  if (directory.user(phone)) throw ClusterError(phone + " exists already");
  UserEntry user{phone, "key hash", "phone", 1000, 0};
  user.number = directory.allocate("user_number", 1, 2);
  directory.bindNumber(user.number, phone);
  if (!directory.writeUser(user)) throw ClusterError(phone + " was written by another node");
}

TEST(FreshCluster, NodesRegisteringTheirFirstPhonesAtOnceAllSucceed) {
  std::vector<std::string> failures;
  for (int round = 0; round < kRounds; ++round) {
    NatsServer nats;
    nats.start();
    std::vector<std::unique_ptr<net::NetworkThread>> threads;
    std::vector<std::unique_ptr<NatsLink>> links;
    for (int n = 0; n < kNodes; ++n) {
      threads.push_back(std::make_unique<net::NetworkThread>("n" + std::to_string(n)));
      threads.back()->start();
      links.push_back(std::make_unique<NatsLink>(
          NatsLinkOptions{nats.url(), "n" + std::to_string(n)}, *threads.back()));
    }
    ASSERT_TRUE(waitUntil([&] {
      for (auto& link : links)
        if (!link->isConnected()) return false;
      return true;
    }));
    std::vector<std::unique_ptr<ClusterDirectory>> directories;
    for (auto& link : links) directories.push_back(std::make_unique<ClusterDirectory>(*link));

    // All nodes start together, as nodes started by one script do.
    std::atomic<int> ready{0};
    std::vector<std::string> errors(kNodes);
    std::vector<std::thread> nodes;
    for (int n = 0; n < kNodes; ++n) {
      nodes.emplace_back([&, n] {
        ++ready;
        while (ready < kNodes) std::this_thread::yield();
        try {
          for (int p = 0; p < 2; ++p) {
            registerFirstPhone(*directories[n], "+1555000" + std::to_string(n * 10 + p));
          }
        } catch (const std::exception& e) {
          errors[n] = e.what();
        }
      });
    }
    for (auto& node : nodes) node.join();
    for (int n = 0; n < kNodes; ++n) {
      if (!errors[n].empty())
        failures.push_back("round " + std::to_string(round) + ": " + errors[n]);
    }
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
    directories.clear();
    links.clear();
    for (auto& thread : threads) thread->stop();
  }
  std::string all;
  for (const auto& failure : failures) all += failure + "\n";
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << kRounds * kNodes
                                << " nodes failed:\n"
                                << all;
}

}  // namespace
}  // namespace switchboard::cluster
