// A live notice lost while every node's link stays up (docs/cluster.md, "Lost
// notices"): the message waits in the stream, and the sender's node rechecks
// the notice that got no answer, so the phone's node imports it without the
// phone logging in again.
//
// The loss is made by nats-server itself: node a connects as a NATS user that
// may not publish on node b's notice subject (sb.node.b.inbox), so every notice
// a sends b is dropped by the server (a permissions violation, which closes no
// connection) while a's PubAcks, b's own notices to a and a's rechecks (another
// subject) go through.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "nats_server.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

constexpr const char* kDropAsNoticesToB = R"(
authorization {
  users = [
    {user: a, password: apass, permissions: {publish: {deny: ["sb.node.b.inbox"]}}}
    {user: b, password: bpass}
  ]
}
)";

std::unique_ptr<RunningHost> startNode(const std::string& name, const std::string& url) {
  auto node = std::make_unique<RunningHost>(
      std::vector<std::string>{"--cluster", url, "--node-name", name, "--log-level", "debug"});
  node->start();
  EXPECT_TRUE(waitUntil([&] {
    return node->log().find("cluster: connected to NATS") != std::string::npos;
  })) << node->log();
  return node;
}

std::size_t count(const RunningHost& node, const std::string& text) {
  std::string log = node.log();
  std::size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

TEST(ClusterLostNotice, AMessageWhoseNoticeIsLostReachesTheLivePhoneWithoutALogin) {
  switchboard::testing::NatsServer nats(kDropAsNoticesToB);
  nats.start();
  auto a = startNode("a", nats.url("a", "apass"));
  auto b = startNode("b", nats.url("b", "bpass"));

  RecordingPhone bob(b->clientOptions(), "+15550009131");
  bob.registerAndLogin(b->sms());
  // Bob takes notices in memory on b (his import after the login is done).
  ASSERT_TRUE(waitUntil([&] {
    return count(*b, "cluster: " + bob.number() + " takes notices in memory") > 0;
  })) << b->log();
  RecordingPhone alice(a->clientOptions(), "+15550009132");
  alice.registerAndLogin(a->sms());

  // Acknowledged once in the stream; its notice to b is dropped by the server.
  client::SendResult sent = alice.client().send(bob.number(), "its notice is lost");
  ASSERT_TRUE(waitUntil([&] { return count(*a, "Permissions Violation") > 0; })) << a->log();

  // The notice got no answer: a rechecks it, and b imports it for bob.
  ASSERT_TRUE(bob.waitForMessages(1)) << a->log() << "\n" << b->log();
  std::vector<client::Message> received = bob.messages();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].body, "its notice is lost");
  EXPECT_EQ(received[0].id, sent.id);
  EXPECT_GE(a->metric("switchboard_cluster_rechecks_total").value_or(0), 1.0);
  EXPECT_EQ(count(*b, "cluster: notices for " + bob.number() + " may be lost"), 1u) << b->log();
  // Without a login: bob's one login on b is the only one there, on the same connection.
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
  EXPECT_EQ(bob.disconnects(), 0u);
  // Its delivered tick reaches alice (b's notices to a are not dropped).
  EXPECT_TRUE(alice.waitForReceipt(sent.id, client::ReceiptKind::delivered));

  // The next message takes the same way: each is rechecked, each arrives once.
  client::SendResult second = alice.client().send(bob.number(), "so is this one's");
  ASSERT_TRUE(bob.waitForMessages(2)) << b->log();
  received = bob.messages();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[1].body, "so is this one's");
  EXPECT_EQ(received[1].id, second.id);
}

}  // namespace
}  // namespace switchboard::integration
