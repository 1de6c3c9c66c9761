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
//
// A late answer is not a lost notice: when every answer b sends a is dropped
// instead (b may not publish on a's answer subjects), a rechecks envelopes the
// phone on b has long taken, and b must not send that live phone back to
// importing (which, for every late answer under load, stalled phones for
// seconds and made more answers late).
//
// Rows moved into the stream (kept while NATS was away) are noticed the same
// way, as requests: a notice of them that is lost is rechecked too.
#include <gtest/gtest.h>
#include <signal.h>

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

// The same users with nothing denied (a reload of kDropAsNoticesToB to this
// lets a's notices to b through from then on; their connections stay open).
constexpr const char* kNothingDropped = R"(
authorization {
  users = [
    {user: a, password: apass}
    {user: b, password: bpass}
  ]
}
)";

constexpr const char* kDropAnswersFromB = R"(
authorization {
  users = [
    {user: a, password: apass}
    {user: b, password: bpass, permissions: {publish: {deny: ["sb.node.a.answer.n.>"]}}}
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

// nats-server with a configuration of users a and b, nodes a and b on it as
// those users, bob registered on b and live there (his import after the login
// done), alice registered on a. Members are destroyed phones first.
class ClusterLostNotice : public ::testing::Test {
 protected:
  void startWith(const char* config, const std::string& bobNumber, const std::string& aliceNumber) {
    nats = std::make_unique<switchboard::testing::NatsServer>(config);
    nats->start();
    a = startNode("a", nats->url("a", "apass"));
    b = startNode("b", nats->url("b", "bpass"));
    bob = std::make_unique<RecordingPhone>(b->clientOptions(), bobNumber);
    bob->registerAndLogin(b->sms());
    ASSERT_TRUE(waitUntil([&] { return count(*b, liveLine()) > 0; })) << b->log();
    alice = std::make_unique<RecordingPhone>(a->clientOptions(), aliceNumber);
    alice->registerAndLogin(a->sms());
  }
  std::string liveLine() const { return "cluster: " + bob->number() + " takes notices in memory"; }

  std::unique_ptr<switchboard::testing::NatsServer> nats;
  std::unique_ptr<RunningHost> a;
  std::unique_ptr<RunningHost> b;
  std::unique_ptr<RecordingPhone> bob;
  std::unique_ptr<RecordingPhone> alice;
};

TEST_F(ClusterLostNotice, AMessageWhoseNoticeIsLostReachesTheLivePhoneWithoutALogin) {
  ASSERT_NO_FATAL_FAILURE(startWith(kDropAsNoticesToB, "+15550009131", "+15550009132"));

  // Acknowledged once in the stream; its notice to b is dropped by the server.
  client::SendResult sent = alice->client().send(bob->number(), "its notice is lost");
  ASSERT_TRUE(waitUntil([&] { return count(*a, "Permissions Violation") > 0; })) << a->log();

  // The notice got no answer: a rechecks it, and b imports it for bob.
  ASSERT_TRUE(bob->waitForMessages(1)) << a->log() << "\n" << b->log();
  std::vector<client::Message> received = bob->messages();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].body, "its notice is lost");
  EXPECT_EQ(received[0].id, sent.id);
  EXPECT_GE(a->metric("switchboard_cluster_rechecks_total").value_or(0), 1.0);
  EXPECT_EQ(count(*b, "cluster: notices for " + bob->number() + " may be lost"), 1u) << b->log();
  // Without a login: bob's one login on b is the only one there, on the same connection.
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
  EXPECT_EQ(bob->disconnects(), 0u);
  // Its delivered tick reaches alice (b's notices to a are not dropped).
  EXPECT_TRUE(alice->waitForReceipt(sent.id, client::ReceiptKind::delivered));

  // The next message takes the same way: each is rechecked, each arrives once.
  client::SendResult second = alice->client().send(bob->number(), "so is this one's");
  ASSERT_TRUE(bob->waitForMessages(2)) << b->log();
  received = bob->messages();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[1].body, "so is this one's");
  EXPECT_EQ(received[1].id, second.id);
}

// Order per (sender, recipient) across a lost notice: the next message's
// notice arrives, and the live phone must not take it from memory ahead of
// the one whose notice was lost (which, before, came seconds later through
// the recheck, after it).
TEST_F(ClusterLostNotice, AMessageWhoseNoticeIsLostIsNotOvertakenByTheNextOneFromMemory) {
  ASSERT_NO_FATAL_FAILURE(startWith(kDropAsNoticesToB, "+15550009171", "+15550009172"));

  client::SendResult first = alice->client().send(bob->number(), "its notice is lost");
  ASSERT_TRUE(waitUntil([&] { return count(*a, "Permissions Violation") > 0; })) << a->log();
  nats->reload(kNothingDropped);
  client::SendResult second = alice->client().send(bob->number(), "its notice arrives");
  // The case this test is about: the second notice reaches b before a's
  // recheck of the first (due 5 s after it) could.
  ASSERT_EQ(a->metric("switchboard_cluster_rechecks_total").value_or(0), 0.0)
      << "the recheck came before the second send; the box was too slow for this test";

  ASSERT_TRUE(bob->waitForMessages(2)) << a->log() << "\n" << b->log();
  std::vector<client::Message> received = bob->messages();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0].id, first.id) << b->log();
  EXPECT_EQ(received[0].body, "its notice is lost");
  EXPECT_EQ(received[1].id, second.id);
  EXPECT_EQ(received[1].body, "its notice arrives");
  // b saw the gap in a's notices to bob and imported, without a login.
  EXPECT_EQ(count(*b, "cluster: notices for " + bob->number() + " may be lost"), 1u) << b->log();
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
  EXPECT_EQ(bob->disconnects(), 0u);
  // Both delivered ticks reach alice.
  EXPECT_TRUE(alice->waitForReceipt(first.id, client::ReceiptKind::delivered));
  EXPECT_TRUE(alice->waitForReceipt(second.id, client::ReceiptKind::delivered));
  // Nothing more arrives later (the recheck of the first finds it imported).
  client::SendResult third = alice->client().send(bob->number(), "and a third");
  ASSERT_TRUE(bob->waitForMessages(3)) << b->log();
  received = bob->messages();
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[2].id, third.id);
}

TEST_F(ClusterLostNotice, ARecheckOfEnvelopesTheLivePhoneTookAlreadyLeavesItLive) {
  ASSERT_NO_FATAL_FAILURE(startWith(kDropAnswersFromB, "+15550009141", "+15550009142"));

  // Bob takes it from memory; b's answer to a's notice batch is dropped.
  client::SendResult sent = alice->client().send(bob->number(), "taken at once");
  ASSERT_TRUE(bob->waitForMessages(1)) << b->log();
  ASSERT_TRUE(waitUntil([&] { return count(*b, "Permissions Violation") > 0; })) << b->log();

  // a rechecks the batch that got no answer; b finds the envelope taken (gone
  // from the stream) or still on its way out of memory: nothing lost.
  ASSERT_TRUE(waitUntil([&] {
    return count(*b, "cluster: recheck for " + bob->number() + ": nothing lost") > 0;
  })) << a->log()
      << "\n"
      << b->log();
  EXPECT_GE(a->metric("switchboard_cluster_rechecks_total").value_or(0), 1.0);
  EXPECT_EQ(count(*b, "cluster: notices for " + bob->number() + " may be lost"), 0u) << b->log();

  // Bob is still live on b: the next message comes from memory too, with no
  // import and no second login.
  std::size_t imports = count(*b, "for " + bob->number() + " from the stream");
  client::SendResult second = alice->client().send(bob->number(), "and this one");
  ASSERT_TRUE(bob->waitForMessages(2)) << b->log();
  std::vector<client::Message> received = bob->messages();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0].id, sent.id);
  EXPECT_EQ(received[1].id, second.id);
  EXPECT_EQ(received[1].body, "and this one");
  EXPECT_EQ(count(*b, "for " + bob->number() + " from the stream"), imports) << b->log();
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
  EXPECT_EQ(bob->disconnects(), 0u);
}

TEST_F(ClusterLostNotice, RowsMovedIntoTheStreamWhoseNoticeIsLostReachTheLivePhone) {
  ASSERT_NO_FATAL_FAILURE(startWith(kDropAsNoticesToB, "+15550009151", "+15550009152"));
  const std::string live = liveLine();
  alice->client().send(bob->number(), "before the outage");  // rechecked: its notice is dropped
  ASSERT_TRUE(bob->waitForMessages(1)) << a->log() << "\n" << b->log();

  nats->stop();
  ASSERT_TRUE(waitUntil([&] { return a->log().find("cluster: lost NATS") != std::string::npos; }))
      << a->log();
  // Kept in a's store: durable, so acknowledged.
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(alice->client().send(bob->number(), "kept " + std::to_string(i)).id);
  }
  // b is back and bob live again (his import after the return found nothing)
  // before a moves its rows into the stream: only the notice of the move can
  // tell b of them, and nats-server drops it.
  std::size_t liveBefore = count(*b, live);
  ASSERT_EQ(::kill(a->pid(), SIGSTOP), 0);
  nats->start();
  bool bobLiveAgain = waitUntil([&] { return count(*b, live) > liveBefore; });
  ASSERT_EQ(::kill(a->pid(), SIGCONT), 0);
  ASSERT_TRUE(bobLiveAgain) << b->log();
  ASSERT_TRUE(waitUntil([&] { return count(*a, "into the stream") > 0; })) << a->log();

  // No answer to that notice: a rechecks it, and b imports the rows for bob.
  ASSERT_TRUE(bob->waitForMessages(4)) << a->log() << "\n" << b->log();
  EXPECT_EQ(bodiesOf(bob->messages()),
            (std::vector<std::string>{"before the outage", "kept 0", "kept 1", "kept 2"}));
  std::vector<client::Message> received = bob->messages();
  ASSERT_EQ(received.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(received[i + 1].id, ids[i]);
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
}

TEST_F(ClusterLostNotice, ANoticeLostWhileItsSendersNodeDiesReachesTheLivePhone) {
  ASSERT_NO_FATAL_FAILURE(startWith(kDropAsNoticesToB, "+15550009161", "+15550009162"));
  // b's departure check (every 2 s) has seen a.
  ASSERT_TRUE(waitUntil([&] { return count(*b, "cluster: nodes in the registry: a, b") > 0; }))
      << b->log();

  // Acknowledged: in the stream, its notice dropped; a is killed before it
  // rechecks it (5 s later), so no one will.
  client::SendResult sent = alice->client().send(bob->number(), "its sender died");
  a->kill9();

  // a's record leaves the registry (its 10 s TTL); b's live phones look in the
  // stream, and bob imports the message without a login.
  ASSERT_TRUE(bob->waitForMessages(1)) << b->log();
  std::vector<client::Message> received = bob->messages();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].body, "its sender died");
  EXPECT_EQ(received[0].id, sent.id);
  EXPECT_EQ(count(*b, "cluster: node a left the cluster"), 1u) << b->log();
  EXPECT_EQ(count(*b, "cluster: notices for " + bob->number() + " may be lost"), 1u) << b->log();
  EXPECT_EQ(b->metric("switchboard_logins_total").value_or(0), 1.0);
  EXPECT_EQ(bob->disconnects(), 0u);
}

}  // namespace
}  // namespace switchboard::integration
