// Items between two phones of one node, and a node killed for good
// (docs/cluster.md, "Stream copies" and "A node is killed and never comes
// back"): what a node makes durable in its own store for a phone on it (a
// session that does not take it within durableAfter, here a phone that stops
// reading) also goes into the cluster's stream before its sender is
// acknowledged, so the recipient gets it on another node after a `kill -9`.
// Two real host processes joined by a nats-server of the test's own; the
// stream is read through a NATS connection of the test's.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/delivery_transport.h"
#include "cluster/nats_link.h"
#include "database_file.h"
#include "nats_server.h"
#include "recording_phone.h"
#include "running_host.h"
#include "two_node_cluster.h"

namespace switchboard::integration {
namespace {

class ClusterSameNode : public TwoNodeCluster {
 protected:
  // What waits in the stream for `phone` (up to 1,000), read through a
  // connection of the test's own; empty on a fatal failure.
  std::vector<cluster::QueuedEnvelope> inStream(const std::string& phone) {
    std::vector<cluster::QueuedEnvelope> out;
    withOwnLink("looking", [&](cluster::NatsLink& link) {
      cluster::DeliveryTransport transport(link, {"looking"});
      out = transport.pending(phone, 0, 1000);
    });
    return out;
  }

  // The stream's last sequence: how many envelopes it ever stored.
  std::uint64_t lastSequence() {
    std::uint64_t last = 0;
    withOwnLink("counting", [&](cluster::NatsLink& link) {
      cluster::DeliveryTransport transport(link, {"counting"});
      last = transport.lastSequence();
    });
    return last;
  }

  // One unlabelled sample of a node's /metrics; 0 (and a failure) when absent.
  static std::uint64_t metric(const RunningHost& node, const std::string& name) {
    std::optional<double> value = node.metric(name);
    EXPECT_TRUE(value) << name;
    return static_cast<std::uint64_t>(value.value_or(0));
  }

  // What a phone sent at once, and the ids its sends were acknowledged with.
  struct Acked {
    std::vector<std::string> bodies;           // in sending order
    std::map<std::string, std::uint64_t> ids;  // by body
    std::vector<std::uint64_t> idsInOrder;
  };

  // Sends `count` messages (`prefix` + i) from `from` to `to` without waiting
  // between them, then waits for every acknowledgement.
  static Acked sendAll(RecordingPhone& from, const std::string& to, const std::string& prefix,
                       std::size_t count) {
    Acked acked;
    std::vector<std::future<client::SendResult>> answers;
    for (std::size_t i = 0; i < count; ++i) {
      acked.bodies.push_back(prefix + std::to_string(i));
      answers.push_back(from.client().sendAsync(to, acked.bodies.back()));
    }
    for (std::size_t i = 0; i < count; ++i) {
      client::SendResult result = answers[i].get();
      acked.ids[acked.bodies[i]] = result.id;
      acked.idsInOrder.push_back(result.id);
    }
    return acked;
  }

  // After a is gone: bob, logging in on b, gets every acknowledged message
  // once, in order, with its id, and alice, logging in on b, their delivered
  // ticks.
  void expectEveryAckedMessageOnB(const Acked& acked, const std::string& aliceNumber,
                                  const std::string& aliceKey, const std::string& bobNumber,
                                  const std::string& bobKey) {
    RecordingPhone bobOnB(b->clientOptions(), bobNumber);
    bobOnB.setKey(bobKey);
    bobOnB.login();
    ASSERT_TRUE(bobOnB.waitForMessages(acked.bodies.size())) << b->log();
    RecordingPhone aliceOnB(b->clientOptions(), aliceNumber);
    aliceOnB.setKey(aliceKey);
    aliceOnB.login();
    for (std::uint64_t id : acked.idsInOrder) {
      EXPECT_TRUE(aliceOnB.waitForReceipt(id, client::ReceiptKind::delivered)) << id;
    }
    // Once each (after the ticks made it round), in order, with their ids.
    std::vector<client::Message> received = bobOnB.messages();
    ASSERT_EQ(received.size(), acked.bodies.size()) << b->log();
    EXPECT_EQ(bodiesOf(received), acked.bodies);
    for (const auto& m : received) {
      EXPECT_EQ(m.id, acked.ids.at(m.body)) << m.body;
      EXPECT_EQ(m.from, aliceNumber);
    }
    EXPECT_TRUE(aliceOnB.messages().empty());
  }
};

std::vector<std::uint64_t> messageIdsOf(const std::vector<cluster::QueuedEnvelope>& queued) {
  std::vector<std::uint64_t> ids;
  for (const auto& q : queued) {
    if (q.envelope.kind == cluster::Envelope::Kind::message) ids.push_back(q.envelope.messageId);
  }
  return ids;
}

// Alice and bob on a; bob's phone stops reading, so what alice sends him is
// written to a's store when durableAfter passes, and acknowledged. a is killed
// and never comes back: bob, logging in on b, gets every acknowledged message
// once, in order, with its id, and alice, logging in on b, their delivered
// ticks. Before: each was in a's store and nowhere else, and bob got none.
TEST_F(ClusterSameNode,
       MessagesSpilledBetweenTwoPhonesOfANodeKilledForGoodReachTheRecipientElsewhere) {
  auto alice = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009301");
  alice->registerAndLogin(a->sms());
  auto bob = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009302");
  bob->registerAndLogin(a->sms());
  const std::string bobNumber = bob->number(), bobKey = bob->key();
  const std::string aliceNumber = alice->number(), aliceKey = alice->key();
  // One taken first (bob reads), then bob's phone stops reading. (Right after
  // his login his session waits for its claim, so it may be written and
  // copied; then its copy leaves the stream within the sweep.)
  alice->client().send(bobNumber, "hello");
  ASSERT_TRUE(bob->waitForMessages(1)) << a->log();
  ASSERT_TRUE(waitUntil([&] { return inStream(bobNumber).empty(); })) << a->log();
  bob->holdDeliveries();

  Acked acked = sendAll(*alice, bobNumber, "spilled on a ", 20);

  // Every one is in a's store (bob's phone never returned them) and, since
  // its sender was acknowledged, in the stream under its id.
  DatabaseFile onA(a->dataDir());
  EXPECT_EQ(onA.column("SELECT body FROM queue WHERE recipient = ? ORDER BY seq", {bobNumber}),
            acked.bodies);
  std::vector<cluster::QueuedEnvelope> copies = inStream(bobNumber);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(messageIdsOf(copies), acked.idsInOrder) << a->log();
  EXPECT_GE(metric(*a, "switchboard_cluster_copied_total"), acked.bodies.size());
  EXPECT_EQ(metric(*a, "switchboard_cluster_copies_owed"), 0u);

  a->kill9();
  bob.reset();  // its connection is gone with a
  alice.reset();

  expectEveryAckedMessageOnB(acked, aliceNumber, aliceKey, bobNumber, bobKey);
  // a's disk still holds its rows: the stream was what carried them.
  EXPECT_EQ(onA.column("SELECT body FROM queue WHERE recipient = ? ORDER BY seq", {bobNumber}),
            acked.bodies);
}

// The same while NATS is away: alice's sends to bob on a are written to a's
// store and acknowledged on the commit, with no copy in the stream. Once NATS
// is back, a copies those rows into the stream (bob is still on a, so no
// catch-up moves them), one envelope each, in order; a is then killed for
// good, and bob logging in on b gets every one once, in order, with its id.
// Before: the rows stayed on a's disk only, and bob got none of them.
TEST_F(ClusterSameNode, MessagesSpilledWhileNatsWasAwayAreCopiedOnceItIsBackAndSurviveTheNode) {
  auto alice = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009331");
  alice->registerAndLogin(a->sms());
  auto bob = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009332");
  bob->registerAndLogin(a->sms());
  const std::string bobNumber = bob->number(), bobKey = bob->key();
  const std::string aliceNumber = alice->number(), aliceKey = alice->key();
  alice->client().send(bobNumber, "hello");
  ASSERT_TRUE(bob->waitForMessages(1)) << a->log();
  ASSERT_TRUE(waitUntil([&] { return inStream(bobNumber).empty(); })) << a->log();
  bob->holdDeliveries();

  nats.kill();
  auto logged = [](const RunningHost& node, const std::string& text) {
    return node.log().find(text) != std::string::npos;
  };
  ASSERT_TRUE(waitUntil([&] { return logged(*a, "cluster: lost NATS"); })) << a->log();

  std::uint64_t copiedBefore = metric(*a, "switchboard_cluster_copied_total");
  Acked acked = sendAll(*alice, bobNumber, "spilled while NATS was away ", 20);
  // Only a's store holds them, and /metrics says how many (counted just after
  // the acks are given, on the store's side).
  EXPECT_TRUE(waitUntil([&] {
    return metric(*a, "switchboard_cluster_copies_owed") == acked.bodies.size();
  })) << metric(*a, "switchboard_cluster_copies_owed");
  DatabaseFile onA(a->dataDir());
  EXPECT_EQ(onA.column("SELECT body FROM queue WHERE recipient = ? ORDER BY seq", {bobNumber}),
            acked.bodies);

  // NATS comes back on its store: a copies the rows into the stream. (b must
  // be back too: a login it checks while degraded knows only its own store.)
  nats.start();
  ASSERT_TRUE(waitUntil([&] {
    return logged(*a, "is back; catching up") && logged(*b, "is back; catching up");
  })) << b->log();
  ASSERT_TRUE(waitUntil([&] { return messageIdsOf(inStream(bobNumber)) == acked.idsInOrder; }))
      << a->log();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(logged(*a, "items written here with no copy in the stream are copied into it"));
  // Paid once each copy is in (the stream answers before the count moves).
  EXPECT_TRUE(waitUntil([&] { return metric(*a, "switchboard_cluster_copies_owed") == 0; }));
  EXPECT_EQ(metric(*a, "switchboard_cluster_copied_total"), copiedBefore + acked.bodies.size());

  a->kill9();
  bob.reset();
  alice.reset();

  expectEveryAckedMessageOnB(acked, aliceNumber, aliceKey, bobNumber, bobKey);
  // a's disk still holds its rows: the stream was what carried them.
  EXPECT_EQ(onA.column("SELECT body FROM queue WHERE recipient = ? ORDER BY seq", {bobNumber}),
            acked.bodies);
}

// The "delivered" ticks of messages alice sent on a to bob on a, written to
// a's store because alice's phone stopped reading (its session could not
// show them within durableAfter): they go into the stream too, and reach
// alice on b once a is killed for good. So does the message her phone was
// holding when it stopped.
TEST_F(ClusterSameNode, DeliveredTicksSpilledForASenderOnANodeKilledForGoodReachItElsewhere) {
  auto alice = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009311");
  alice->registerAndLogin(a->sms());
  auto bob = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009312");
  bob->registerAndLogin(a->sms());
  auto carol = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009313");
  carol->registerAndLogin(a->sms());
  const std::string aliceNumber = alice->number(), aliceKey = alice->key();

  // Bob takes nothing yet: alice's sends are acknowledged as durable, and
  // their ticks come once he reads.
  bob->holdDeliveries();
  constexpr std::size_t kCount = 10;
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < kCount; ++i) {
    ids.push_back(alice->client().send(bob->number(), "to bob " + std::to_string(i)).id);
  }
  // Alice's phone stops reading: carol's message is held in its deliver, and
  // everything after it waits behind it.
  alice->holdDeliveries();
  client::SendResult held = carol->client().send(aliceNumber, "held by alice's phone");
  bob->releaseDeliveries();
  ASSERT_TRUE(bob->waitForMessages(kCount)) << a->log();

  // The ticks are written to a's store for alice, and copied into the stream.
  DatabaseFile onA(a->dataDir());
  auto ticksOnA = [&] {
    return onA.integer("SELECT count(*) FROM receipts_queue WHERE recipient = ? AND kind = 0",
                       {aliceNumber});
  };
  ASSERT_TRUE(waitUntil([&] { return ticksOnA() == static_cast<std::int64_t>(kCount); }))
      << a->log();
  auto ticksInStream = [&] {
    std::size_t ticks = 0;
    for (const auto& q : inStream(aliceNumber)) {
      if (q.envelope.kind == cluster::Envelope::Kind::delivered) ++ticks;
    }
    return ticks;
  };
  ASSERT_TRUE(waitUntil([&] { return ticksInStream() == kCount; })) << a->log();
  ASSERT_FALSE(HasFatalFailure());

  a->kill9();
  alice.reset();
  bob.reset();
  carol.reset();

  RecordingPhone aliceOnB(b->clientOptions(), aliceNumber);
  aliceOnB.setKey(aliceKey);
  aliceOnB.login();
  for (std::uint64_t id : ids) {
    EXPECT_TRUE(aliceOnB.waitForReceipt(id, client::ReceiptKind::delivered)) << id << b->log();
  }
  ASSERT_TRUE(aliceOnB.waitForMessages(1)) << b->log();
  std::vector<client::Message> got = aliceOnB.messages();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, held.id);
  EXPECT_EQ(got[0].body, "held by alice's phone");
}

// A message delivered from memory at once costs the stream nothing; one
// written to the store (the phone stopped reading) is copied into it before
// its sender's ack, and once the phone took it the copy leaves the stream (the
// 3 s sweep): a store and a remove per item written, nothing left behind.
TEST_F(ClusterSameNode, ACopyLeavesTheStreamOnceThePhoneTookItsRowAndPromptDeliveriesStoreNothing) {
  RecordingPhone alice(a->clientOptions(), "+15550009321");
  alice.registerAndLogin(a->sms());
  RecordingPhone bob(a->clientOptions(), "+15550009322");
  bob.registerAndLogin(a->sms());
  // Sent while bob's session still waits for its claim: written, copied, and
  // gone from the stream once he took it.
  alice.client().send(bob.number(), "hello");
  ASSERT_TRUE(bob.waitForMessages(1));
  ASSERT_TRUE(waitUntil([&] { return inStream(bob.number()).empty(); })) << a->log();
  ASSERT_TRUE(waitUntil([&] { return inStream(alice.number()).empty(); })) << a->log();
  std::uint64_t before = lastSequence();
  ASSERT_FALSE(HasFatalFailure());

  // Bob reads: each message reaches him from memory, and its delivered tick
  // rides in alice's reply (it was delivered before anything was written).
  constexpr std::size_t kPrompt = 10;
  bool allPrompt = true;
  for (std::size_t i = 0; i < kPrompt; ++i) {
    client::SendResult result = alice.client().send(bob.number(), "live " + std::to_string(i));
    allPrompt &= result.deliveredAt != 0;
  }
  ASSERT_TRUE(bob.waitForMessages(1 + kPrompt));
  if (allPrompt) {
    EXPECT_EQ(lastSequence(), before) << "a message delivered from memory touched the stream";
  } else {
    GTEST_LOG_(INFO) << "a delivery was late (loaded box): the prompt check is skipped";
    before = lastSequence();
  }

  bob.holdDeliveries();
  constexpr std::size_t kHeld = 5;
  std::vector<std::uint64_t> heldIds;
  for (std::size_t i = 0; i < kHeld; ++i) {
    heldIds.push_back(alice.client().send(bob.number(), "held " + std::to_string(i)).id);
  }
  // Acknowledged: written on a and in the stream, one envelope each.
  EXPECT_EQ(messageIdsOf(inStream(bob.number())), heldIds) << a->log();
  EXPECT_EQ(lastSequence(), before + kHeld);

  bob.releaseDeliveries();
  ASSERT_TRUE(bob.waitForMessages(1 + kPrompt + kHeld));
  for (std::uint64_t id : heldIds) {
    EXPECT_TRUE(alice.waitForReceipt(id, client::ReceiptKind::delivered)) << id;
  }
  DatabaseFile onA(a->dataDir());
  EXPECT_TRUE(waitUntil([&] {
    return onA.integer("SELECT count(*) FROM queue WHERE recipient = ?", {bob.number()}) == 0;
  }));
  // The sweep removes the copies of the rows bob took.
  EXPECT_TRUE(waitUntil([&] { return inStream(bob.number()).empty(); })) << a->log();
  ASSERT_FALSE(HasFatalFailure());
  // Alice's ticks reached her (from memory, or copied if her phone was slow
  // and then taken): nothing is left for her either.
  EXPECT_TRUE(waitUntil([&] { return inStream(alice.number()).empty(); }));
  EXPECT_EQ(bob.messages().size(), 1 + kPrompt + kHeld);
}

}  // namespace
}  // namespace switchboard::integration
