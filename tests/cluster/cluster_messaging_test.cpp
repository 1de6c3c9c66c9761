// Messaging across two real host processes joined by a real nats-server
// (docs/cluster.md): phones register on one node and log in on the other,
// messages and receipts cross nodes, a phone away receives on whichever node it
// comes back to, a login or a new device on one node closes the session on the
// other, and a node killed with messages in flight loses none it acknowledged.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "cluster/delivery_transport.h"
#include "cluster/nats_link.h"
#include "nats_server.h"
#include "recording_phone.h"
#include "running_host.h"
#include "two_node_cluster.h"

namespace switchboard::integration {
namespace {

class ClusterMessaging : public TwoNodeCluster {};

TEST_F(ClusterMessaging, APhoneRegisteredOnALogsInOnBAndAWrongKeyIsRefusedThere) {
  RecordingPhone onA(a->clientOptions(), "+15550009001");
  onA.registerAndLogin(a->sms());
  onA.client().logout();

  RecordingPhone onB(b->clientOptions(), onA.number());
  onB.setKey(onA.key());
  onB.login();
  EXPECT_TRUE(onB.client().isLoggedIn());
  EXPECT_EQ(onB.client().serverInfo().node, "b");

  RecordingPhone impostor(b->clientOptions(), onA.number());
  impostor.setKey(std::string(32, 'x'));
  EXPECT_EQ(refusal([&] { impostor.login(); }), "invalid device key for " + onA.number());
}

TEST_F(ClusterMessaging, AMessageCrossesNodesInOrderWithSentDeliveredAndReadTicks) {
  RecordingPhone alice(a->clientOptions(), "+15550009011");
  RecordingPhone bob(b->clientOptions(), "+15550009012");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());

  auto first = alice.client().send(bob.number(), "hello from a");
  ASSERT_NE(first.id, 0u);
  ASSERT_TRUE(bob.waitForMessages(1));
  auto received = bob.messages();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].body, "hello from a");
  EXPECT_EQ(received[0].from, alice.number());
  EXPECT_EQ(received[0].id, first.id);
  ASSERT_TRUE(alice.waitForReceipt(first.id, client::ReceiptKind::delivered));

  bob.client().receipt({first.id}, client::ReceiptKind::read);
  ASSERT_TRUE(alice.waitForReceipt(first.id, client::ReceiptKind::read));

  // And back the other way.
  auto reply = bob.client().send(alice.number(), "hello from b");
  ASSERT_TRUE(alice.waitForMessages(1));
  EXPECT_EQ(alice.messages().at(0).body, "hello from b");
  ASSERT_TRUE(bob.waitForReceipt(reply.id, client::ReceiptKind::delivered));

  // Many at once keep their order and arrive once each.
  std::vector<std::future<client::SendResult>> sends;
  std::vector<std::string> expected = {"hello from a"};
  for (int i = 0; i < 30; ++i) {
    expected.push_back("burst " + std::to_string(i));
    sends.push_back(alice.client().sendAsync(bob.number(), expected.back()));
  }
  for (auto& send : sends) send.get();
  ASSERT_TRUE(bob.waitForMessages(expected.size()));
  EXPECT_EQ(bodiesOf(bob.messages()), expected);
}

// The first sends to a phone registered on another node wait while the node
// learns it from the cluster; those made meanwhile wait behind the first, so
// none overtakes another.
TEST_F(ClusterMessaging, ABurstOfFirstSendsToAPhoneOnTheOtherNodeKeepsItsOrder) {
  RecordingPhone alice(a->clientOptions(), "+15550009121");
  RecordingPhone bob(b->clientOptions(), "+15550009122");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());

  std::vector<std::future<client::SendResult>> sends;
  std::vector<std::string> expected;
  for (int i = 0; i < 40; ++i) {
    expected.push_back("first contact " + std::to_string(i));
    sends.push_back(alice.client().sendAsync(bob.number(), expected.back()));
  }
  for (auto& send : sends) send.get();
  ASSERT_TRUE(bob.waitForMessages(expected.size()));
  EXPECT_EQ(bodiesOf(bob.messages()), expected);

  // A burst to a phone no node knows is refused send by send, with the reason.
  std::vector<std::future<client::SendResult>> refused;
  for (int i = 0; i < 3; ++i) refused.push_back(alice.client().sendAsync("+15550009129", "x"));
  ASSERT_EQ(refused.size(), 3u);
  for (auto& send : refused) {
    EXPECT_EQ(refusal([&] { send.get(); }), "unknown recipient +15550009129");
  }
}

TEST_F(ClusterMessaging, MessagesForAPhoneAwayReachItOnTheOtherNode) {
  RecordingPhone alice(a->clientOptions(), "+15550009021");
  alice.registerAndLogin(a->sms());
  std::string bobKey;
  {
    RecordingPhone bobOnB(b->clientOptions(), "+15550009022");
    bobOnB.registerAndLogin(b->sms());
    bobKey = bobOnB.key();
    bobOnB.client().logout();
  }
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(alice.client().send("+15550009022", "while away " + std::to_string(i)).id);
  }

  // Bob comes back on A, the node he never used.
  RecordingPhone bobOnA(a->clientOptions(), "+15550009022");
  bobOnA.setKey(bobKey);
  bobOnA.login();
  ASSERT_TRUE(bobOnA.waitForMessages(5));
  EXPECT_EQ(bodiesOf(bobOnA.messages()),
            (std::vector<std::string>{"while away 0", "while away 1", "while away 2",
                                      "while away 3", "while away 4"}));
  for (std::uint64_t id : ids) {
    EXPECT_TRUE(alice.waitForReceipt(id, client::ReceiptKind::delivered)) << id;
  }
}

TEST_F(ClusterMessaging, ALoginOnBClosesTheSessionOnALoggedInElsewhere) {
  RecordingPhone carol(a->clientOptions(), "+15550009031");
  RecordingPhone first(a->clientOptions(), "+15550009032");
  carol.registerAndLogin(a->sms());
  first.registerAndLogin(a->sms());

  RecordingPhone second(b->clientOptions(), first.number());
  second.setKey(first.key());
  second.login();
  ASSERT_TRUE(second.client().isLoggedIn());
  ASSERT_TRUE(waitUntil([&] { return !first.kicks().empty() && !first.client().isLoggedIn(); }))
      << "the session on node a was not closed";
  EXPECT_EQ(first.kicks(), std::vector<std::string>{"logged in elsewhere"});

  // Carol's next message, sent on A, finds the phone on B.
  auto sent = carol.client().send(first.number(), "to wherever you are");
  ASSERT_TRUE(second.waitForMessages(1));
  EXPECT_EQ(second.messages().at(0).body, "to wherever you are");
  ASSERT_TRUE(carol.waitForReceipt(sent.id, client::ReceiptKind::delivered));
  EXPECT_TRUE(first.messages().empty());
}

TEST_F(ClusterMessaging, ANewDeviceOnBReplacesTheDeviceOnAEverywhere) {
  RecordingPhone old(a->clientOptions(), "+15550009041");
  old.registerAndLogin(a->sms());

  RecordingPhone replacement(b->clientOptions(), old.number());
  replacement.registerAndLogin(b->sms());
  ASSERT_TRUE(waitUntil([&] { return !old.kicks().empty(); }))
      << "the old device's session on node a was not closed";
  EXPECT_EQ(old.kicks(), std::vector<std::string>{"replaced by a new device"});
  EXPECT_NE(replacement.key(), old.key());

  // The old key no longer opens a session on A either.
  RecordingPhone again(a->clientOptions(), old.number());
  again.setKey(old.key());
  EXPECT_EQ(refusal([&] { again.login(); }), "invalid device key for " + old.number());
}

TEST_F(ClusterMessaging, EveryMessageAcknowledgedBeforeTheSendersNodeIsKilledArrivesOnce) {
  RecordingPhone bob(b->clientOptions(), "+15550009052");
  bob.registerAndLogin(b->sms());
  auto alice = std::make_unique<RecordingPhone>(a->clientOptions(), "+15550009051");
  alice->registerAndLogin(a->sms());

  // Sends in flight when node a dies: some acknowledged, the rest failed.
  constexpr int kSends = 200;
  std::vector<std::pair<std::string, std::future<client::SendResult>>> sends;
  for (int i = 0; i < kSends; ++i) {
    std::string body = "in flight " + std::to_string(i);
    sends.emplace_back(body, alice->client().sendAsync(bob.number(), body));
  }
  // The first answer is in: kill the node while the rest are on their way.
  ASSERT_EQ(sends.front().second.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  a->kill9();
  std::map<std::string, std::uint64_t> expected;  // what node a acknowledged
  for (auto& [body, send] : sends) {
    ASSERT_EQ(send.wait_for(std::chrono::seconds(30)), std::future_status::ready) << body;
    try {
      expected[body] = send.get().id;
    } catch (const client::ClientError&) {
      // Not acknowledged: it may or may not arrive, but only once.
    }
  }
  alice.reset();
  std::cout << expected.size() << " of " << kSends << " sends were acknowledged before the kill\n";

  ASSERT_GT(expected.size(), 0u);
  ASSERT_TRUE(waitUntil([&] {
    std::size_t found = 0;
    for (const auto& message : bob.messages()) found += expected.count(message.body);
    return found >= expected.size();
  })) << "acknowledged "
      << expected.size() << ", received " << bob.messages().size();
  std::map<std::string, int> seen;
  for (const auto& message : bob.messages()) ++seen[message.body];
  for (const auto& [body, id] : expected) {
    EXPECT_EQ(seen[body], 1) << body;
    (void)id;
  }
  for (const auto& [body, count] : seen) EXPECT_EQ(count, 1) << body;
}

TEST_F(ClusterMessaging, EveryMessageAcknowledgedArrivesOnceWhenTheRecipientsNodeIsKilled) {
  RecordingPhone alice(a->clientOptions(), "+15550009091");
  alice.registerAndLogin(a->sms());
  // Bob's phone knows both nodes, b first: it moves to a when b dies.
  client::ClientOptions both = b->clientOptions();
  both.endpoints = {b->endpoint(), a->endpoint()};
  RecordingPhone bob(both, "+15550009092");
  bob.registerAndLogin(b->sms());

  constexpr int kSends = 200;
  std::vector<std::pair<std::string, std::future<client::SendResult>>> sends;
  for (int i = 0; i < kSends; ++i) {
    std::string body = "to a dying node " + std::to_string(i);
    sends.emplace_back(body, alice.client().sendAsync(bob.number(), body));
  }
  ASSERT_TRUE(waitUntil([&] { return !bob.messages().empty(); }));
  b->kill9();  // with some of them taken by b, some delivered, some on their way
  std::size_t beforeKill = bob.messages().size();
  std::map<std::string, std::uint64_t> expected;
  for (auto& [body, send] : sends) {
    ASSERT_EQ(send.wait_for(std::chrono::seconds(30)), std::future_status::ready) << body;
    try {
      expected[body] = send.get().id;
    } catch (const client::ClientError&) {
    }
  }
  ASSERT_GT(expected.size(), 0u);
  // Bob moves to a (his second endpoint) while b is down: waited for, since a
  // restarted b would otherwise win him back when every message had reached
  // him before the kill (seen: 200 of 200, then bob on b).
  ASSERT_TRUE(waitUntil([&] {
    if (!bob.client().isLoggedIn()) return false;
    // Still logged in over the connection to b that is being reset: asked again.
    try {
      return bob.client().serverInfo().node == "a";
    } catch (const std::exception&) {
      return false;
    }
  })) << "bob did not log in again on a while b was down";
  // b comes back with its store: what it had taken for bob and not handed
  // over follows him to a, where he logged in again meanwhile.
  b->start();
  ASSERT_TRUE(waitUntil([&] {
    std::size_t found = 0;
    for (const auto& message : bob.messages()) found += expected.count(message.body);
    return found >= expected.size();
  })) << "acknowledged "
      << expected.size() << ", received " << bob.messages().size() << "\n"
      << b->log();
  std::map<std::string, int> seen;
  for (const auto& message : bob.messages()) ++seen[message.body];
  for (const auto& [body, id] : expected) EXPECT_EQ(seen[body], 1) << body;
  for (const auto& [body, count] : seen) EXPECT_EQ(count, 1) << body;
  EXPECT_EQ(bob.client().serverInfo().node, "a");
  std::cout << beforeKill << " of " << expected.size()
            << " acknowledged messages had reached bob through b when it was killed\n";
}

TEST_F(ClusterMessaging, WhatANodeKeptWhileNatsWasDownReachesThePhoneOnTheOtherNodeAfter) {
  RecordingPhone alice(a->clientOptions(), "+15550009061");
  RecordingPhone bob(b->clientOptions(), "+15550009062");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());
  alice.client().send(bob.number(), "before the outage");
  ASSERT_TRUE(bob.waitForMessages(1));

  nats.stop();
  ASSERT_TRUE(waitUntil([&] { return a->log().find("cluster: lost NATS") != std::string::npos; }))
      << a->log();
  // Node a keeps these in its own store: durable, so acknowledged.
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(alice.client().send(bob.number(), "during the outage " + std::to_string(i)).id);
  }
  EXPECT_EQ(bob.messages().size(), 1u);

  nats.start();
  ASSERT_TRUE(bob.waitForMessages(4)) << a->log();
  EXPECT_EQ(bodiesOf(bob.messages()),
            (std::vector<std::string>{"before the outage", "during the outage 0",
                                      "during the outage 1", "during the outage 2"}));
  for (std::uint64_t id : ids) {
    EXPECT_TRUE(alice.waitForReceipt(id, client::ReceiptKind::delivered)) << id;
  }
  EXPECT_NE(a->log().find("into the stream"), std::string::npos);
}

TEST_F(ClusterMessaging, AMessageAPhoneDidNotTakeOnBFollowsItToA) {
  RecordingPhone alice(a->clientOptions(), "+15550009071");
  alice.registerAndLogin(a->sms());
  auto bobOnB = std::make_unique<RecordingPhone>(b->clientOptions(), "+15550009072");
  bobOnB->registerAndLogin(b->sms());
  bobOnB->holdDeliveries();  // the phone on b stops reading
  auto sent = alice.client().send(bobOnB->number(), "not taken on b");
  // Node b has it in its store (imported from the stream, durable) and on its
  // way to the phone, which does not return the call.
  ASSERT_TRUE(waitUntil([&] {
    return b->log().find("imported 1 messages and 0 receipts for " + bobOnB->number()) !=
           std::string::npos;
  })) << b->log();

  RecordingPhone bobOnA(a->clientOptions(), bobOnB->number());
  bobOnA.setKey(bobOnB->key());
  bobOnA.login();
  // (The phone on b cannot hear it while it is not reading: b's log says it.)
  ASSERT_TRUE(waitUntil([&] {
    return b->log().find("of " + bobOnB->number() + ": logged in elsewhere") != std::string::npos;
  })) << b->log();
  ASSERT_TRUE(bobOnA.waitForMessages(1)) << b->log();
  // Node a asked b for the phone (b logs it before it answers) before it
  // imported, rather than waiting for b's periodic sweep.
  EXPECT_NE(b->log().find("handed " + bobOnB->number() + " over (logged in elsewhere)"),
            std::string::npos)
      << b->log();
  EXPECT_EQ(bodiesOf(bobOnA.messages()), std::vector<std::string>{"not taken on b"});
  EXPECT_EQ(bobOnA.messages().at(0).id, sent.id);
  EXPECT_TRUE(alice.waitForReceipt(sent.id, client::ReceiptKind::delivered));
  bobOnB->releaseDeliveries();
  bobOnB.reset();
}

// A node hands back what it held for a phone after messages sent later went
// straight into the stream (the phone moved, or NATS was away). The node the
// phone logs in on puts them back in the order they were sent. The test plays
// the handing-back node itself: it publishes, last, a message of alice's that
// was sent before the two already waiting.
TEST_F(ClusterMessaging, WhatANodeHandsBackLateIsDeliveredInTheOrderItWasSent) {
  RecordingPhone alice(a->clientOptions(), "+15550009091");
  alice.registerAndLogin(a->sms());
  std::string bobKey;
  {
    RecordingPhone bobOnB(b->clientOptions(), "+15550009092");
    bobOnB.registerAndLogin(b->sms());
    bobKey = bobOnB.key();
    bobOnB.client().logout();
  }
  auto one = alice.client().send("+15550009092", "one");
  auto two = alice.client().send("+15550009092", "two");
  ASSERT_LT(one.id, two.id);

  withOwnLink("handing-back", [&](cluster::NatsLink& link) {
    cluster::DeliveryTransport transport(link, {"b"});
    cluster::Envelope zero;
    zero.sender = alice.number();
    zero.recipient = "+15550009092";
    zero.clientMsgId = "handed-back-zero";
    zero.body = "zero";
    zero.sentAtMs = one.timestamp - 1000;  // a second before "one"
    zero.messageId = one.id - 1;           // alice's number, a sequence she never used
    zero.exactlyOnceKey = "x/1/" + std::to_string(zero.messageId);
    EXPECT_FALSE(transport.publish(zero).duplicate);
  });
  ASSERT_FALSE(HasFatalFailure());

  RecordingPhone bobOnA(a->clientOptions(), "+15550009092");
  bobOnA.setKey(bobKey);
  bobOnA.login();
  ASSERT_TRUE(bobOnA.waitForMessages(3));
  EXPECT_EQ(bodiesOf(bobOnA.messages()), (std::vector<std::string>{"zero", "one", "two"}));
}

// A group is one record in the cluster: made on a, listed, used and changed
// from b, with the refusals of a single node.
TEST_F(ClusterMessaging, AGroupMadeOnAIsListedUsedAndChangedFromB) {
  RecordingPhone alice(a->clientOptions(), "+15550009101");
  RecordingPhone bob(b->clientOptions(), "+15550009102");
  RecordingPhone carol(b->clientOptions(), "+15550009103");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());
  carol.registerAndLogin(b->sms());

  // Node a has never seen bob or carol: the cluster knows them.
  std::uint64_t group = alice.client().createGroup("trio", {bob.number(), carol.number()});
  auto listed = bob.client().groups();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].id, group);
  EXPECT_EQ(listed[0].name, "trio");
  EXPECT_EQ(listed[0].owner, alice.number());
  EXPECT_EQ(listed[0].members,
            (std::vector<std::string>{alice.number(), bob.number(), carol.number()}));

  auto sent = bob.client().sendGroup(group, "from b to the trio");
  ASSERT_TRUE(alice.waitForMessages(1));
  ASSERT_TRUE(carol.waitForMessages(1));
  for (RecordingPhone* member : {&alice, &carol}) {
    ASSERT_EQ(member->messages().size(), 1u) << member->number();
    EXPECT_EQ(member->messages()[0].id, sent.id);
    EXPECT_EQ(member->messages()[0].group, group);
    EXPECT_EQ(member->messages()[0].from, bob.number());
  }

  // Only the creator removes, whichever node asks.
  EXPECT_EQ(refusal([&] { bob.client().removeMembers(group, {carol.number()}); }),
            "only the group's creator may remove members");
  EXPECT_EQ(refusal([&] { alice.client().addMembers(group, {"+15550009199"}); }),
            "unknown user +15550009199");
  alice.client().removeMembers(group, {carol.number()});
  EXPECT_TRUE(carol.client().groups().empty());
  EXPECT_EQ(refusal([&] { carol.client().sendGroup(group, "still here?"); }),
            "no group " + std::to_string(group) + " with " + carol.number() + " as a member");

  // Node b's copy follows the change made on a: carol gets nothing more.
  bob.client().sendGroup(group, "without carol");
  ASSERT_TRUE(alice.waitForMessages(2));
  EXPECT_EQ(alice.messages().at(1).body, "without carol");
  bob.client().send(carol.number(), "fence");
  ASSERT_TRUE(carol.waitForMessages(2));
  EXPECT_EQ(bodiesOf(carol.messages()), (std::vector<std::string>{"from b to the trio", "fence"}));

  // A member on b adds carol back, and alice on a sees it.
  bob.client().addMembers(group, {carol.number()});
  auto again = alice.client().groups();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].members,
            (std::vector<std::string>{alice.number(), bob.number(), carol.number()}));
  bob.client().leaveGroup(group);
  EXPECT_TRUE(bob.client().groups().empty());
  EXPECT_EQ(alice.client().groups().at(0).members,
            (std::vector<std::string>{alice.number(), carol.number()}));
}

// A group send puts one copy per member on another node into the stream, each
// under its own exactly-once key (the recipient is in it): with one key for all
// of them JetStream stored the first copy only, and a member away took nothing
// at its next login.
TEST_F(ClusterMessaging, AGroupMessageReachesEveryMemberThatWasAwayOnTheOtherNode) {
  RecordingPhone alice(a->clientOptions(), "+15550009141");
  alice.registerAndLogin(a->sms());
  std::vector<std::string> away = {"+15550009142", "+15550009143", "+15550009144"};
  std::vector<std::string> keys;
  for (const std::string& number : away) {
    RecordingPhone member(b->clientOptions(), number);
    member.registerAndLogin(b->sms());
    keys.push_back(member.key());
    member.client().logout();
  }
  std::uint64_t group = alice.client().createGroup("away", away);
  auto sent = alice.client().sendGroup(group, "to everyone away");

  for (std::size_t i = 0; i < away.size(); ++i) {
    RecordingPhone member(b->clientOptions(), away[i]);
    member.setKey(keys[i]);
    member.login();
    ASSERT_TRUE(member.waitForMessages(1)) << away[i] << "\n" << b->log();
    auto received = member.messages();
    ASSERT_EQ(received.size(), 1u) << away[i];
    EXPECT_EQ(received[0].id, sent.id);
    EXPECT_EQ(received[0].group, group);
    EXPECT_EQ(received[0].body, "to everyone away");
  }
}

TEST_F(ClusterMessaging, PresenceAndTypingCrossNodesBetweenMutualContacts) {
  RecordingPhone alice(a->clientOptions(), "+15550009081");
  RecordingPhone bob(b->clientOptions(), "+15550009082");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());
  alice.client().addContacts({bob.number()});
  bob.client().addContacts({alice.number()});

  bob.client().setPresence(client::PresenceState::away);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& update : alice.presence()) {
      if (update.phone == bob.number() && update.state == client::PresenceState::away &&
          !update.typing) {
        return true;
      }
    }
    return false;
  })) << "alice on a did not see bob on b go away";

  alice.client().typing(bob.number(), true);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& update : bob.presence()) {
      if (update.phone == alice.number() && update.typing) return true;
    }
    return false;
  })) << "bob on b did not see alice on a typing";

  // A stranger (no contact either way) sees neither.
  RecordingPhone carol(b->clientOptions(), "+15550009083");
  carol.registerAndLogin(b->sms());
  alice.client().typing(carol.number(), true);
  alice.client().setPresence(client::PresenceState::away);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& update : bob.presence()) {
      if (update.phone == alice.number() && update.state == client::PresenceState::away) {
        return true;
      }
    }
    return false;
  }));
  for (const auto& update : carol.presence()) EXPECT_NE(update.phone, alice.number());
}

// ---------------------------------------------------------------- delivery from memory

// A phone's node takes envelopes from the live notices in memory once the
// phone is live there (docs/cluster.md, "Cross-node delivery"): b's log says
// so, and nothing for the phone is imported into b's store afterwards.
bool waitUntilLive(const RunningHost& node, const std::string& phone) {
  return waitUntil([&] {
    return node.log().find("cluster: " + phone + " takes notices in memory") != std::string::npos;
  });
}

// Sends the messages "<prefix> <i>" for i from `first` up to `count` (excluded) at
// once, without waiting.
using Sends = std::vector<std::pair<std::string, std::future<client::SendResult>>>;
Sends startBurst(RecordingPhone& from, const std::string& to, const std::string& prefix, int count,
                 int first = 0) {
  Sends sends;
  for (int i = first; i < count; ++i) {
    std::string body = prefix + " " + std::to_string(i);
    sends.emplace_back(body, from.client().sendAsync(to, body));
  }
  return sends;
}

// Each acknowledged send's body and id (refused ones left out).
std::map<std::string, std::uint64_t> acknowledged(Sends& sends) {
  std::map<std::string, std::uint64_t> acked;
  for (auto& [body, send] : sends) {
    EXPECT_EQ(send.wait_for(std::chrono::seconds(60)), std::future_status::ready) << body;
    try {
      acked[body] = send.get().id;
    } catch (const client::ClientError&) {
    }
  }
  return acked;
}

// The burst's numbers in the order `messages` has them.
std::vector<int> burstOrder(const std::vector<client::Message>& messages,
                            const std::string& prefix) {
  std::vector<int> order;
  for (const auto& message : messages) {
    if (message.body.rfind(prefix + " ", 0) == 0) {
      order.push_back(std::stoi(message.body.substr(prefix.size() + 1)));
    }
  }
  return order;
}

TEST_F(ClusterMessaging, ABurstToAPhoneLiveOnTheOtherNodeArrivesInOrderFromMemory) {
  RecordingPhone alice(a->clientOptions(), "+15550009131");
  RecordingPhone bob(b->clientOptions(), "+15550009132");
  alice.registerAndLogin(a->sms());
  bob.registerAndLogin(b->sms());
  alice.client().send(bob.number(), "first");
  ASSERT_TRUE(bob.waitForMessages(1));
  ASSERT_TRUE(waitUntilLive(*b, bob.number())) << b->log();
  std::size_t mark = b->log().size();

  constexpr int kBurst = 300;
  auto sends = startBurst(alice, bob.number(), "burst", kBurst);
  auto acked = acknowledged(sends);
  ASSERT_EQ(acked.size(), static_cast<std::size_t>(kBurst));
  ASSERT_TRUE(bob.waitForMessages(kBurst + 1));
  auto received = bob.messages();
  ASSERT_EQ(received.size(), static_cast<std::size_t>(kBurst + 1));
  std::vector<int> expected(kBurst);
  for (int i = 0; i < kBurst; ++i) expected[i] = i;
  EXPECT_EQ(burstOrder(received, "burst"), expected);
  for (const auto& message : received) {
    if (acked.count(message.body)) {
      EXPECT_EQ(message.id, acked[message.body]) << message.body;
    }
  }
  for (const auto& [body, id] : acked) {
    EXPECT_TRUE(alice.waitForReceipt(id, client::ReceiptKind::delivered)) << body;
  }
  // From memory: none of it went through b's store by an import.
  EXPECT_EQ(b->log().substr(mark).find("for " + bob.number() + " from the stream"),
            std::string::npos)
      << b->log().substr(mark);
}

// The session on b ends while envelopes are on their way to it in memory:
// what it had not taken stays in the stream and reaches the phone when it
// logs in again, on a, in order.
TEST_F(ClusterMessaging, APhoneWhoseSessionEndsMidStreamGetsTheRestAtItsNextLoginOnTheOtherNode) {
  RecordingPhone alice(a->clientOptions(), "+15550009141");
  alice.registerAndLogin(a->sms());
  RecordingPhone bobOnB(b->clientOptions(), "+15550009142");
  bobOnB.registerAndLogin(b->sms());
  alice.client().send(bobOnB.number(), "first");
  ASSERT_TRUE(bobOnB.waitForMessages(1));
  ASSERT_TRUE(waitUntilLive(*b, bobOnB.number())) << b->log();

  constexpr int kBurst = 300;
  auto sends = startBurst(alice, bobOnB.number(), "stream", kBurst);
  ASSERT_TRUE(bobOnB.waitForMessages(20));
  bobOnB.client().logout();  // mid-stream
  std::size_t takenOnB = bobOnB.messageCount() - 1;
  auto acked = acknowledged(sends);
  ASSERT_EQ(acked.size(), static_cast<std::size_t>(kBurst));

  RecordingPhone bobOnA(a->clientOptions(), bobOnB.number());
  bobOnA.setKey(bobOnB.key());
  bobOnA.login();
  auto allArrived = [&] {
    std::set<std::string> seen;
    for (const auto& message : bobOnB.messages()) seen.insert(message.body);
    for (const auto& message : bobOnA.messages()) seen.insert(message.body);
    for (const auto& [body, id] : acked) {
      if (!seen.count(body)) return false;
    }
    return true;
  };
  ASSERT_TRUE(waitUntil(allArrived))
      << "taken on b " << takenOnB << ", on a " << bobOnA.messageCount() << "\n"
      << b->log();
  // On a, in order and once each, with the acknowledged ids; it goes on from
  // where b stopped (a copy b handed the phone just before the logout may be
  // seen by both phones, never twice by one). On a loaded machine b may have
  // delivered the whole burst before the logout: then a has nothing to add.
  auto onA = burstOrder(bobOnA.messages(), "stream");
  EXPECT_TRUE(std::is_sorted(onA.begin(), onA.end()));
  EXPECT_EQ(std::adjacent_find(onA.begin(), onA.end()), onA.end()) << "a repeat on a";
  if (!onA.empty()) {
    EXPECT_EQ(onA.back(), kBurst - 1);
  }
  for (const auto& message : bobOnA.messages()) {
    if (acked.count(message.body)) {
      EXPECT_EQ(message.id, acked[message.body]) << message.body;
    }
  }
  std::cout << takenOnB << " taken on b before the logout, " << onA.size() << " on a\n";
}

// b is killed while it delivers from memory (envelopes taken by the phone
// whose removals from the stream may still be on their way, and envelopes b
// holds for the phone, which has stopped reading): the phone moves to a, and
// with b back (what b had made durable moves on) every acknowledged message
// reaches the application exactly once (the client drops a repeat).
TEST_F(ClusterMessaging, KillingTheRecipientsNodeWhileItDeliversFromMemoryLosesAndRepeatsNothing) {
  RecordingPhone alice(a->clientOptions(), "+15550009151");
  alice.registerAndLogin(a->sms());
  client::ClientOptions both = b->clientOptions();
  both.endpoints = {b->endpoint(), a->endpoint()};
  RecordingPhone bob(both, "+15550009152");
  bob.registerAndLogin(b->sms());
  alice.client().send(bob.number(), "first");
  ASSERT_TRUE(bob.waitForMessages(1));
  ASSERT_TRUE(waitUntilLive(*b, bob.number())) << b->log();

  // The first part is taken; then the phone stops reading, and the rest is
  // acknowledged (in the stream, noticed to b) while b holds it. (Killing b
  // once some of one burst had arrived raced with the delivery: a whole burst
  // of 400 can reach the phone between two looks.)
  constexpr int kTaken = 100;
  constexpr int kBurst = 400;
  auto sends = startBurst(alice, bob.number(), "memory", kTaken);
  ASSERT_TRUE(bob.waitForMessages(kTaken + 1)) << b->log();
  bob.holdDeliveries();
  for (auto& send : startBurst(alice, bob.number(), "memory", kBurst, kTaken)) {
    sends.push_back(std::move(send));
  }
  auto acked = acknowledged(sends);
  b->kill9();
  std::size_t beforeKill = bob.messageCount() - 1;
  bob.releaseDeliveries();
  ASSERT_EQ(acked.size(), static_cast<std::size_t>(kBurst));
  ASSERT_GT(acked.size(), beforeKill);
  // The phone moves to a (b is its first endpoint: it would go back to b
  // once b is up again).
  ASSERT_TRUE(waitUntil([&] {
    try {
      return bob.client().isLoggedIn() && bob.client().serverInfo().node == "a";
    } catch (const std::exception&) {
      return false;  // still reconnecting
    }
  })) << a->log();
  b->start();
  ASSERT_TRUE(waitUntil([&] {
    std::size_t found = 0;
    for (const auto& message : bob.messages()) found += acked.count(message.body);
    return found >= acked.size();
  })) << "acknowledged "
      << acked.size() << ", received " << bob.messageCount() << "\n"
      << b->log();
  std::map<std::string, int> seen;
  for (const auto& message : bob.messages()) ++seen[message.body];
  for (const auto& [body, id] : acked) EXPECT_EQ(seen[body], 1) << body;
  for (const auto& [body, count] : seen) EXPECT_EQ(count, 1) << body;
  for (const auto& message : bob.messages()) {
    if (acked.count(message.body)) {
      EXPECT_EQ(message.id, acked[message.body]) << message.body;
    }
  }
  EXPECT_EQ(bob.client().serverInfo().node, "a");
  std::cout << beforeKill << " of " << acked.size()
            << " acknowledged messages had reached bob from b's memory when it was killed\n";
}

// A phone sends with a clientMsgId on node a, then (as a client does when its
// node dies before answering) sends the same clientMsgId again from node b.
// The first copy was kept on a (a phone there), so the second is a new copy
// with a new id through the stream: the recipient's node hands the phone both,
// and the client library drops the second by (sender, clientMsgId), so the
// application gets the message once (docs/cluster.md, "What remains", item 3).
// The sender is given a new id for the repeat: the first copy never was in the
// stream, so b cannot know it (the gap the doc names).
TEST_F(ClusterMessaging, AClientMsgIdSentAgainOnTheOtherNodeReachesTheApplicationOnce) {
  RecordingPhone bob(a->clientOptions(), "+15550009161");
  bob.registerAndLogin(a->sms());
  RecordingPhone alice(a->clientOptions(), "+15550009162");
  alice.registerAndLogin(a->sms());
  client::SendResult first = alice.client().send(bob.number(), "once", std::string("repeat-1"));
  ASSERT_TRUE(bob.waitForMessages(1));

  RecordingPhone aliceOnB(b->clientOptions(), alice.number());
  aliceOnB.setKey(alice.key());
  aliceOnB.login();
  client::SendResult again = aliceOnB.client().send(bob.number(), "once", std::string("repeat-1"));
  // Sent after the repeat, on the same node to the same phone: once it is
  // there, the repeat has reached bob's client too.
  aliceOnB.client().send(bob.number(), "after");
  ASSERT_TRUE(bob.waitForMessages(2)) << a->log() << b->log();

  std::vector<client::Message> got = bob.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bodiesOf(got), (std::vector<std::string>{"once", "after"}));
  EXPECT_EQ(got[0].id, first.id);
  EXPECT_NE(again.id, first.id)
      << "the repeat is given the first send's id: update docs/cluster.md";
}

// Sender dedup across nodes: alice sends clientMsgId C to bob (away: the
// message waits in the stream) on a, then sends C again on b, as a client
// whose node died before answering would. b's publish is a duplicate in the
// stream; b reads the stored copy back and answers alice with the first id
// (not the one it chose), so her ticks match; bob gets the message once. A
// third send of C on b is answered from b's dedup cache with the same id.
TEST_F(ClusterMessaging, AClientMsgIdSentAgainOnTheOtherNodeIsAnsweredWithTheFirstId) {
  std::string bobKey;
  {
    RecordingPhone bob(b->clientOptions(), "+15550009171");
    bob.registerAndLogin(b->sms());
    bobKey = bob.key();
    bob.client().logout();
  }
  RecordingPhone alice(a->clientOptions(), "+15550009172");
  alice.registerAndLogin(a->sms());
  client::SendResult first = alice.client().send("+15550009171", "once", std::string("repeat-2"));

  RecordingPhone aliceOnB(b->clientOptions(), alice.number());
  aliceOnB.setKey(alice.key());
  aliceOnB.login();
  client::SendResult again =
      aliceOnB.client().send("+15550009171", "once", std::string("repeat-2"));
  EXPECT_EQ(again.id, first.id) << b->log();
  EXPECT_EQ(again.timestamp, first.timestamp);
  client::SendResult third =
      aliceOnB.client().send("+15550009171", "once", std::string("repeat-2"));
  EXPECT_EQ(third.id, first.id);
  aliceOnB.client().send("+15550009171", "after");

  RecordingPhone bob(a->clientOptions(), "+15550009171");
  bob.setKey(bobKey);
  bob.login();
  ASSERT_TRUE(bob.waitForMessages(2)) << a->log() << b->log();
  std::vector<client::Message> got = bob.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bodiesOf(got), (std::vector<std::string>{"once", "after"}));
  EXPECT_EQ(got[0].id, first.id);
  EXPECT_TRUE(aliceOnB.waitForReceipt(first.id, client::ReceiptKind::delivered));
}

// Sender dedup across nodes once the first copy has left the stream: alice
// sends C on a to bob live on b, who takes it (its copy leaves the stream);
// alice moves to b and sends C again. b answers with the first id and time
// (a's outbox wrote the send to sb_sent, and b loaded alice's recent sends
// when her login there named a as her last node), and bob gets nothing more.
TEST_F(ClusterMessaging, AClientMsgIdSentAgainAfterItsCopyLeftTheStreamIsAnsweredWithTheFirstId) {
  RecordingPhone bob(b->clientOptions(), "+15550009181");
  bob.registerAndLogin(b->sms());
  RecordingPhone alice(a->clientOptions(), "+15550009182");
  alice.registerAndLogin(a->sms());
  client::SendResult first = alice.client().send(bob.number(), "once", std::string("repeat-3"));
  ASSERT_TRUE(bob.waitForMessages(1)) << b->log();
  ASSERT_TRUE(alice.waitForReceipt(first.id, client::ReceiptKind::delivered));
  // Bob took it: its copy leaves the stream (at once from memory, or within the
  // 3 s sweep once its row is taken).
  withOwnLink("looking", [&](cluster::NatsLink& link) {
    cluster::DeliveryTransport transport(link, {"looking"});
    EXPECT_TRUE(waitUntil([&] { return transport.pending(bob.number(), 0, 10).empty(); }));
  });
  ASSERT_FALSE(HasFatalFailure());

  RecordingPhone aliceOnB(b->clientOptions(), alice.number());
  aliceOnB.setKey(alice.key());
  aliceOnB.login();
  // Her claim on b named a, and b read her recent sends (the claim runs on b's
  // worker after the login returned).
  ASSERT_TRUE(waitUntil([&] {
    return b->log().find("recent sends of " + alice.number() + " on a remembered here") !=
           std::string::npos;
  })) << b->log();
  client::SendResult again = aliceOnB.client().send(bob.number(), "once", std::string("repeat-3"));
  EXPECT_EQ(again.id, first.id) << b->log();
  EXPECT_EQ(again.timestamp, first.timestamp);
  client::SendResult after = aliceOnB.client().send(bob.number(), "after");

  ASSERT_TRUE(bob.waitForMessages(2)) << b->log();
  std::vector<client::Message> got = bob.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bodiesOf(got), (std::vector<std::string>{"once", "after"}));
  EXPECT_EQ(got[0].id, first.id);
  EXPECT_EQ(got[1].id, after.id);
}

// A re-send made right after the login on the new node, before that node's
// worker has claimed the phone: the claim waits for the old node's handover
// (up to 2 s when that node does not answer, here because it is stopped), and
// the session takes sends meanwhile. The recent sends are read at the login,
// before the session exists, so the re-send is answered with the first id.
TEST_F(ClusterMessaging,
       AClientMsgIdSentAgainBeforeTheNewNodeClaimedThePhoneIsAnsweredWithTheFirstId) {
  RecordingPhone bob(b->clientOptions(), "+15550009191");
  bob.registerAndLogin(b->sms());
  RecordingPhone alice(a->clientOptions(), "+15550009192");
  alice.registerAndLogin(a->sms());
  // Acknowledged: its sb_sent entry is stored (written before the flush that
  // comes before the ack).
  client::SendResult first = alice.client().send(bob.number(), "once", std::string("repeat-4"));
  ASSERT_TRUE(bob.waitForMessages(1)) << b->log();

  // a stops answering: b's handover request at the claim waits its 2 s.
  ASSERT_EQ(::kill(a->pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{a->pid()};
  RecordingPhone aliceOnB(b->clientOptions(), alice.number());
  aliceOnB.setKey(alice.key());
  aliceOnB.login();
  client::SendResult again = aliceOnB.client().send(bob.number(), "once", std::string("repeat-4"));
  // The claim had not run yet (it waits for a): this was answered from what
  // the login read.
  EXPECT_EQ(b->log().find("handover of " + alice.number() + " from a not answered"),
            std::string::npos)
      << b->log();
  EXPECT_EQ(again.id, first.id) << b->log();
  EXPECT_EQ(again.timestamp, first.timestamp);
  client::SendResult after = aliceOnB.client().send(bob.number(), "after");

  ASSERT_TRUE(bob.waitForMessages(2)) << b->log();
  std::vector<client::Message> got = bob.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bodiesOf(got), (std::vector<std::string>{"once", "after"}));
  EXPECT_EQ(got[0].id, first.id);
  EXPECT_EQ(got[1].id, after.id);
}

}  // namespace
}  // namespace switchboard::integration
