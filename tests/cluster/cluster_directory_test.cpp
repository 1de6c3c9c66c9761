// The shared directory and the delivery transport against a real nats-server:
// two links stand for two nodes.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "cluster/cluster_directory.h"
#include "cluster/delivery_transport.h"
#include "cluster/kv_bucket.h"
#include "cluster/nats_link.h"
#include "nats_server.h"
#include "net/network_thread.h"

namespace switchboard::cluster {
namespace {

using testing::NatsServer;
using testing::waitUntil;

class TwoNodes : public ::testing::Test {
 protected:
  void SetUp() override {
    nats.start();
    threadA.start();
    threadB.start();
    linkA = std::make_unique<NatsLink>(options("a"), threadA);
    linkB = std::make_unique<NatsLink>(options("b"), threadB);
    ASSERT_TRUE(waitUntil([&] { return linkA->isConnected() && linkB->isConnected(); }));
  }
  void TearDown() override {
    linkA.reset();
    linkB.reset();
    threadA.stop();
    threadB.stop();
  }
  NatsLinkOptions options(const std::string& name) {
    NatsLinkOptions o;
    o.url = nats.url();
    o.clientName = name;
    return o;
  }
  NatsServer nats;
  net::NetworkThread threadA{"a"};
  net::NetworkThread threadB{"b"};
  std::unique_ptr<NatsLink> linkA;
  std::unique_ptr<NatsLink> linkB;
};

// ---------------------------------------------------------------- directory

TEST_F(TwoNodes, AUserRegisteredOnOneNodeIsSeenOnTheOtherAndANewDeviceNeedsTheRevision) {
  ClusterDirectory a(*linkA);
  ClusterDirectory b(*linkB);
  EXPECT_FALSE(b.user("+15550001").has_value());
  UserEntry user{"+15550001", std::string("\x01\x00\x02", 3), "phone one", 1000, 0};
  ASSERT_TRUE(a.writeUser(user));
  EXPECT_FALSE(a.writeUser(user)) << "a second registration over revision 0 must lose";

  auto seen = b.user("+15550001");
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->keyHash, std::string("\x01\x00\x02", 3));
  EXPECT_EQ(seen->deviceName, "phone one");

  // Two nodes verify a new device at once over the same revision: one wins.
  UserEntry onA = *seen;
  onA.keyHash = "A";
  UserEntry onB = *seen;
  onB.keyHash = "B";
  EXPECT_TRUE(b.writeUser(onB));
  EXPECT_FALSE(a.writeUser(onA));
  EXPECT_EQ(a.user("+15550001")->keyHash, "B");

  a.deleteUser("+15550001");
  EXPECT_FALSE(b.user("+15550001").has_value());
}

TEST_F(TwoNodes, ContactsAddedConcurrentlyFromTwoNodesAreAllKept) {
  ClusterDirectory a(*linkA);
  ClusterDirectory b(*linkB);
  std::thread fromA([&] {
    for (int i = 0; i < 20; ++i)
      a.addContact("+15550001", "+1555100" + std::to_string(i % 10) + std::to_string(i));
  });
  std::thread fromB([&] {
    for (int i = 0; i < 20; ++i)
      b.addContact("+15550001", "+1555200" + std::to_string(i % 10) + std::to_string(i));
  });
  fromA.join();
  fromB.join();
  auto contacts = a.contacts("+15550001");
  ASSERT_EQ(contacts.size(), 40u);
  EXPECT_TRUE(std::is_sorted(contacts.begin(), contacts.end()));
  b.addContact("+15550001", contacts.front());  // already there: no change
  b.removeContact("+15550001", contacts.front());
  EXPECT_EQ(a.contacts("+15550001").size(), 39u);
  EXPECT_TRUE(a.contacts("+15559999").empty());
}

TEST_F(TwoNodes, GroupsAreSharedAndWrittenOverTheirRevision) {
  ClusterDirectory a(*linkA);
  ClusterDirectory b(*linkB);
  GroupEntry group{"g1", "friends", "+15550001", {"+15550001", "+15550002"}, 0};
  ASSERT_TRUE(a.writeGroup(group));
  auto seen = b.group("g1");
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->members, group.members);
  seen->members.push_back("+15550003");
  ASSERT_TRUE(b.writeGroup(*seen));
  EXPECT_FALSE(a.writeGroup(group)) << "a stale revision must not overwrite the new member";
  EXPECT_EQ(a.group("g1")->members.size(), 3u);
  a.deleteGroup("g1");
  EXPECT_FALSE(b.group("g1").has_value());
}

TEST_F(TwoNodes, ALoginOnNodeBIsSeenByNodeAsWatcherAndAnOlderClaimLoses) {
  ClusterDirectory a(*linkA);
  ClusterDirectory b(*linkB);
  ASSERT_TRUE(a.claim("+15550001", {"a", 11, 1000, 0}));

  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> seen;  // phone, node ("" released)
  std::vector<std::string> holders;                       // holder(): the last node once released
  std::atomic<bool> watching{true};
  std::thread watcher([&] {
    a.watchLocations(
        [&](const std::string& phone, const std::optional<SessionLocation>& where) {
          std::lock_guard lock(mutex);
          seen.emplace_back(phone, where ? where->node : "");
          holders.push_back(where ? where->holder() : "");
        },
        [&] { return watching.load(); });
  });
  auto count = [&] {
    std::lock_guard lock(mutex);
    return seen.size();
  };
  ASSERT_TRUE(waitUntil([&] { return count() == 1; }));  // the current value first

  ASSERT_TRUE(b.claim("+15550001", {"b", 22, 2000, 0}));
  ASSERT_TRUE(waitUntil([&] { return count() == 2; }));
  EXPECT_FALSE(a.claim("+15550001", {"a", 12, 1500, 0})) << "an older login must not win";
  a.release("+15550001", 11);  // A's old session ends: B's claim stays
  EXPECT_EQ(b.location("+15550001")->node, "b");
  b.release("+15550001", 22);
  ASSERT_TRUE(waitUntil([&] { return count() == 3; }));
  EXPECT_FALSE(a.location("+15550001").has_value());
  watching = false;
  watcher.join();
  std::lock_guard lock(mutex);
  using Seen = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(seen, (Seen{{"+15550001", "a"}, {"+15550001", "b"}, {"+15550001", ""}}));
  EXPECT_EQ(holders, (std::vector<std::string>{"a", "b", "b"}));
}

TEST_F(TwoNodes, AClaimReportsTheNodeThatHeldThePhoneEvenAfterItsRelease) {
  ClusterDirectory a(*linkA);
  ClusterDirectory b(*linkB);
  std::optional<SessionLocation> previous;
  ASSERT_TRUE(a.claim("+15550003", {"a", 11, 1000, 0}, &previous));
  EXPECT_FALSE(previous.has_value()) << "a first login replaces nothing";

  // Open on a: the claim on b replaces it, and names a's session.
  ASSERT_TRUE(b.claim("+15550003", {"b", 22, 2000, 0}, &previous));
  ASSERT_TRUE(previous.has_value());
  EXPECT_EQ(previous->node, "a");
  EXPECT_EQ(previous->sessionId, 11u);
  EXPECT_EQ(previous->holder(), "a");

  // Released on b: no session is open, but b is still the node that held it.
  b.release("+15550003", 22, "b");
  EXPECT_FALSE(a.location("+15550003").has_value());
  ASSERT_TRUE(a.claim("+15550003", {"a", 12, 3000, 0}, &previous));
  ASSERT_TRUE(previous.has_value());
  EXPECT_EQ(previous->node, "");
  EXPECT_EQ(previous->holder(), "b");
}

// sb_sent (the outbox writes it; a login after a move reads it): every entry
// of one sender, read through one watch, and none of another sender's whose
// number starts the same; those the caller has already are left out.
TEST_F(TwoNodes, TheRecentSendsOfASenderAreAllReadAndNoOneElses) {
  ClusterDirectory b(*linkB);
  KvBucket sent(*linkA, {kSentBucket, std::chrono::seconds(600), 1, false});
  constexpr int kSends = 300;
  for (int i = 0; i < kSends; ++i) {
    sent.put(sentKey("+15550001", "c-" + std::to_string(i)), sentValue(1000 + i, 5000 + i));
  }
  for (int i = 0; i < 5; ++i) sent.put(sentKey("+155500011", "c-" + std::to_string(i)), "9 9");

  std::map<std::string, SentRecord> byId;
  for (SentRecord& record : b.sentBy("+15550001")) byId[record.clientMsgId] = record;
  ASSERT_EQ(byId.size(), static_cast<std::size_t>(kSends));
  for (int i = 0; i < kSends; ++i) {
    const SentRecord& record = byId["c-" + std::to_string(i)];
    EXPECT_EQ(record.messageId, static_cast<std::uint64_t>(1000 + i));
    EXPECT_EQ(record.sentAtMs, 5000 + i);
  }
  auto even = [](const std::string& clientMsgId) {
    return std::stoi(clientMsgId.substr(2)) % 2 == 0;
  };
  std::vector<SentRecord> odd = b.sentBy("+15550001", even);
  EXPECT_EQ(odd.size(), static_cast<std::size_t>(kSends / 2));
  for (const SentRecord& record : odd) EXPECT_FALSE(even(record.clientMsgId));
  EXPECT_TRUE(b.sentBy("+15550009").empty());  // none: the watch ends at once
}

TEST_F(TwoNodes, TheDirectoryOutlivesANatsRestartAndFailsFastWhileItIsDown) {
  ClusterDirectory a(*linkA);
  ASSERT_TRUE(a.writeUser({"+15550007", "hash", "p", 1, 0}));
  nats.stop();
  ASSERT_TRUE(waitUntil([&] { return !linkA->isConnected(); }));
  auto started = std::chrono::steady_clock::now();
  try {
    a.user("+15550007");
    FAIL() << "a degraded directory answered";
  } catch (const ClusterError& e) {
    EXPECT_EQ(std::string(e.what()), "cluster degraded: NATS at " + nats.url() + " unreachable");
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1))
      << "degraded calls must fail at once, not after a time-out";
  nats.start();
  ASSERT_TRUE(waitUntil([&] { return linkA->isConnected(); }));
  ASSERT_TRUE(waitUntil([&] {
    try {
      return a.user("+15550007").has_value();
    } catch (const ClusterError&) {
      return false;  // JetStream still recovering its streams
    }
  }));
  EXPECT_EQ(a.user("+15550007")->keyHash, "hash");
}

// ---------------------------------------------------------------- delivery

Envelope message(const std::string& from, const std::string& to, int n) {
  Envelope e;
  e.sender = from;
  e.recipient = to;
  e.clientMsgId = "c" + std::to_string(n);
  e.body = "body " + std::to_string(n);
  e.sentAtMs = n;
  return e;
}

TEST_F(TwoNodes, CrossNodeDeliveryIsDurableOrderedAndExactlyOnce) {
  DeliveryTransport a(*linkA, {"a"});
  DeliveryTransport b(*linkB, {"b"});
  std::mutex mutex;
  std::vector<QueuedEnvelope> live;
  std::atomic<bool> onB{true};
  b.listen(threadB, [&](NoticeBatch batch) {
    if (!threadB.isCurrent()) onB = false;
    EXPECT_EQ(batch.items.size(), 1u);
    EXPECT_FALSE(batch.replyTo.empty()) << "notify() asks for an answer (else it is rechecked)";
    b.answerNotices(batch.replyTo);
    std::lock_guard lock(mutex);
    for (auto& queued : batch.items) live.push_back(std::move(queued));
  });
  linkB->post([] {});  // nothing needed: the subscription is live once listen() returns

  constexpr int kMessages = 200;
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < kMessages; ++i) {
    auto result = a.publish(message("+15550001", "+15550002", i));
    EXPECT_FALSE(result.duplicate);
    ids.push_back(result.serverId);
    a.notify("b", {QueuedEnvelope{result.serverId, message("+15550001", "+15550002", i)}});
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));

  // A retry of message 7 (same sender, same clientMsgId) is not stored again.
  auto retry = a.publish(message("+15550001", "+15550002", 7));
  EXPECT_TRUE(retry.duplicate);
  EXPECT_EQ(retry.serverId, ids[7]);

  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard lock(mutex);
    return live.size() == kMessages;
  }));
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(live.size(), static_cast<std::size_t>(kMessages));
    for (int i = 0; i < kMessages; ++i) {
      EXPECT_EQ(live[i].serverId, ids[i]);
      EXPECT_EQ(live[i].envelope.clientMsgId, "c" + std::to_string(i));
      EXPECT_EQ(live[i].envelope.body, "body " + std::to_string(i));
    }
  }
  EXPECT_TRUE(onB);

  // The same messages wait in the stream for a login on any node, in order.
  auto waiting = b.pending("+15550002", 0, 1000);
  ASSERT_EQ(waiting.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(waiting[i].serverId, ids[i]);
  EXPECT_EQ(b.pending("+15550002", ids[99], 1000).size(), 100u);
  EXPECT_EQ(b.pending("+15550002", 0, 10).size(), 10u);
  EXPECT_TRUE(b.pending("+15550003", 0, 10).empty());

  // Taken messages leave the queue; removing twice is harmless.
  for (int i = 0; i < 150; ++i) b.remove(ids[i]);
  b.remove(ids[0]);
  waiting = a.pending("+15550002", 0, 1000);
  ASSERT_EQ(waiting.size(), 50u);
  EXPECT_EQ(waiting.front().serverId, ids[150]);
}

// An export after an outage notifies hundreds of messages and thousands of
// receipts at once: more than NATS takes in one message (max_payload, 1 MiB by
// default). Before, that notice was refused whole ("Maximum Payload Exceeded")
// and a live phone never learnt of the envelopes (the outage test lost 256
// acknowledged messages that way). Now it goes as several batches, in order.
TEST_F(TwoNodes, ANoticeLargerThanTheServersMaxPayloadArrivesWholeAndInOrder) {
  DeliveryTransport a(*linkA, {"a"});
  DeliveryTransport b(*linkB, {"b"});
  std::mutex mutex;
  std::vector<QueuedEnvelope> live;
  std::size_t batches = 0;
  b.listen(threadB, [&](NoticeBatch batch) {
    std::lock_guard lock(mutex);
    ++batches;
    for (auto& queued : batch.items) live.push_back(std::move(queued));
  });
  constexpr int kEnvelopes = 3000;  // 3000 x 1 KiB: about 3 MiB in all
  std::vector<QueuedEnvelope> moved;
  for (int i = 0; i < kEnvelopes; ++i) {
    Envelope e = message("+15550001", "+15550002", i);
    e.body = std::string(1024, static_cast<char>('a' + i % 26));
    moved.push_back({static_cast<std::uint64_t>(i + 1), e});
  }
  a.notify("b", moved);
  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard lock(mutex);
    return live.size() >= kEnvelopes;
  })) << "received "
      << live.size();
  std::lock_guard lock(mutex);
  ASSERT_EQ(live.size(), static_cast<std::size_t>(kEnvelopes));
  for (int i = 0; i < kEnvelopes; ++i) {
    EXPECT_EQ(live[i].serverId, static_cast<std::uint64_t>(i + 1));
    EXPECT_EQ(live[i].envelope.clientMsgId, "c" + std::to_string(i));
    EXPECT_EQ(live[i].envelope.body.size(), 1024u);
  }
  EXPECT_GT(batches, 3u);
}

TEST_F(TwoNodes, AnAcknowledgedEnvelopeSurvivesANatsKillAndReachesALoginOnTheOtherNode) {
  DeliveryTransport a(*linkA, {"a"});
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(a.publish(message("+15550001", "+15550009", i)).serverId);
  Envelope receipt;
  receipt.kind = Envelope::Kind::delivered;
  receipt.sender = "+15550009";
  receipt.recipient = "+15550001";
  receipt.receiptOf = ids[0];
  auto receiptId = a.publish(receipt).serverId;
  EXPECT_TRUE(a.publish(receipt).duplicate) << "a receipt is exactly-once too";

  nats.kill();
  ASSERT_TRUE(waitUntil([&] { return !linkA->isConnected(); }));
  EXPECT_THROW(a.publish(message("+15550001", "+15550009", 99)), ClusterError);
  nats.start();
  ASSERT_TRUE(waitUntil([&] { return linkB->isConnected(); }));

  DeliveryTransport b(*linkB, {"b"});
  std::vector<QueuedEnvelope> waiting;
  ASSERT_TRUE(waitUntil([&] {
    try {
      waiting = b.pending("+15550009", 0, 1000);
      return waiting.size() == 20;
    } catch (const ClusterError&) {
      return false;
    }
  }));
  ASSERT_EQ(waiting.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(waiting[i].envelope.clientMsgId, "c" + std::to_string(i));
  auto receipts = b.pending("+15550001", 0, 10);
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_EQ(receipts[0].serverId, receiptId);
  EXPECT_EQ(receipts[0].envelope.kind, Envelope::Kind::delivered);
  EXPECT_EQ(receipts[0].envelope.receiptOf, ids[0]);
}

}  // namespace
}  // namespace switchboard::cluster
