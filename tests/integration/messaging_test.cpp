// End to end against the real host binary: sending, offline queue and push,
// presence, groups, refused input.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>

#include "../notify/http_receiver.h"
#include "database_file.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;
using client::ReceiptKind;

TEST(Messaging, OnlineMessageGetsSentDeliveredAndReadTicks) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000001");
  RecordingPhone b(host.clientOptions(), "+15550000002");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());

  client::SendResult sent = a.client().send(b.number(), "hello", "first");
  EXPECT_GT(sent.id, 0u);
  EXPECT_GT(sent.timestamp, 0);
  ASSERT_TRUE(b.waitForMessages(1));
  client::Message got = b.messages().at(0);
  EXPECT_EQ(got.id, sent.id);
  EXPECT_EQ(got.from, a.number());
  EXPECT_EQ(got.body, "hello");
  EXPECT_EQ(got.clientMsgId, "first");
  EXPECT_EQ(got.group, 0u);

  ASSERT_TRUE(a.waitForReceipt(sent.id, ReceiptKind::delivered));
  b.client().receipt({got.id}, ReceiptKind::read);
  ASSERT_TRUE(a.waitForReceipt(sent.id, ReceiptKind::read));
  for (const auto& r : a.receipts()) EXPECT_EQ(r.by, b.number());

  // The same clientMsgId again: the first send's id, nothing delivered twice.
  client::SendResult again = a.client().send(b.number(), "hello", "first");
  EXPECT_EQ(again.id, sent.id);
  client::SendResult second = a.client().send(b.number(), "second");
  ASSERT_TRUE(b.waitForMessages(2));
  EXPECT_EQ(bodiesOf(b.messages()), (std::vector<std::string>{"hello", "second"}));
  EXPECT_EQ(b.messages().at(1).id, second.id);
}

// The callback form of sendAsync answers once per send, with the result.
TEST(Messaging, SendAsyncWithACallbackAnswersOnceWithTheResult) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000011");
  RecordingPhone b(host.clientOptions(), "+15550000012");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());

  std::mutex mutex;
  std::vector<std::string> answers;
  for (int i = 0; i < 3; ++i) {
    a.client().sendAsync(
        b.number(), "m" + std::to_string(i), "c" + std::to_string(i),
        [&, i](std::optional<client::SendResult> result, const client::ClientError* error) {
          std::lock_guard lock(mutex);
          answers.push_back(std::to_string(i) + ":" + (result ? "id" : std::string(error->what())));
        });
  }
  ASSERT_TRUE(b.waitForMessages(3));
  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard lock(mutex);
    return answers.size() >= 3;
  }));
  a.client().contacts();  // a later answer: any second callback would have run by now
  std::lock_guard lock(mutex);
  std::sort(answers.begin(), answers.end());
  EXPECT_EQ(answers, (std::vector<std::string>{"0:id", "1:id", "2:id"}));
}

TEST(Messaging, OfflinePhoneGetsQueuedMessagesInOrderAndAPush) {
  notify::testing::HttpReceiver receiver;
  RunningHost host({"--push-webhook", receiver.url("/push"), "--plugin-setting",
                    "offline.push-interval-seconds=0"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000011");
  RecordingPhone b(host.clientOptions(), "+15550000012");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));  // registered, not logged in

  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    sent.push_back("offline " + std::to_string(i));
    a.client().send(b.number(), sent.back());
  }
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& request : receiver.received()) {
      if (request.body.find(b.number()) != std::string::npos) return true;
    }
    return false;
  })) << "no push notification for "
      << b.number();
  EXPECT_EQ(receiver.received().at(0).method, "POST");

  b.login();
  ASSERT_TRUE(b.waitForMessages(5));
  EXPECT_EQ(bodiesOf(b.messages()), sent);
  for (const auto& m : b.messages()) EXPECT_EQ(m.from, a.number());
  ASSERT_TRUE(a.waitForReceipt(b.messages().back().id, ReceiptKind::delivered));
}

TEST(Messaging, PresenceAndTypingReachMutualContactsOnly) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000021");
  RecordingPhone b(host.clientOptions(), "+15550000022");
  RecordingPhone c(host.clientOptions(), "+15550000023");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  c.registerAndLogin(host.sms());
  // a and b are mutual contacts; c has a, but a does not have c.
  a.client().addContacts({b.number()});
  b.client().addContacts({a.number()});
  c.client().addContacts({a.number()});

  a.client().setPresence(client::PresenceState::away);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& u : b.presence()) {
      if (u.phone == a.number() && u.state == client::PresenceState::away) return true;
    }
    return false;
  }));
  a.client().typing(b.number(), true);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& u : b.presence()) {
      if (u.phone == a.number() && u.typing) return true;
    }
    return false;
  }));

  // Towards c (a is c's contact, c is not a's): nothing. A message afterwards is
  // the fence: the session's Inbox calls arrive in order, and a presence update
  // for c would have been posted before the message.
  a.client().typing(c.number(), true);
  a.client().setPresence(client::PresenceState::online);
  a.client().send(c.number(), "fence");
  ASSERT_TRUE(c.waitForMessages(1));
  EXPECT_TRUE(c.presence().empty());

  // The contact lists say the same.
  auto bContacts = b.client().contacts();
  ASSERT_EQ(bContacts.size(), 1u);
  EXPECT_EQ(bContacts[0].phone, a.number());
  EXPECT_TRUE(bContacts[0].registered);
  EXPECT_NE(bContacts[0].state, client::PresenceState::offline);
  auto cContacts = c.client().contacts();
  ASSERT_EQ(cContacts.size(), 1u);
  EXPECT_EQ(cContacts[0].state, client::PresenceState::offline);
}

TEST(Messaging, GroupOfThreeGetsFanOutAndPerMemberReceipts) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000031");
  RecordingPhone b(host.clientOptions(), "+15550000032");
  RecordingPhone c(host.clientOptions(), "+15550000033");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  c.registerAndLogin(host.sms());

  std::uint64_t group = a.client().createGroup("trio", {b.number(), c.number()});
  EXPECT_GT(group, 0u);
  auto groups = b.client().groups();
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].id, group);
  EXPECT_EQ(groups[0].name, "trio");
  EXPECT_EQ(groups[0].owner, a.number());
  EXPECT_EQ(groups[0].members.size(), 3u);

  client::SendResult sent = a.client().sendGroup(group, "hi all");
  for (RecordingPhone* member : {&b, &c}) {
    ASSERT_TRUE(member->waitForMessages(1)) << member->number();
    client::Message m = member->messages().at(0);
    EXPECT_EQ(m.group, group);
    EXPECT_EQ(m.from, a.number());
    EXPECT_EQ(m.body, "hi all");
  }
  EXPECT_TRUE(a.messages().empty());  // the sender is not sent its own message

  b.client().receipt({b.messages().at(0).id}, ReceiptKind::read);
  auto hasReceipt = [&](const std::string& by, ReceiptKind kind) {
    return waitUntil([&] {
      for (const auto& r : a.receipts()) {
        if (r.by == by && r.kind == kind) return true;
      }
      return false;
    });
  };
  EXPECT_TRUE(hasReceipt(b.number(), ReceiptKind::delivered));
  EXPECT_TRUE(hasReceipt(c.number(), ReceiptKind::delivered));
  EXPECT_TRUE(hasReceipt(b.number(), ReceiptKind::read));
  for (const auto& r : a.receipts()) EXPECT_EQ(r.id, sent.id) << "receipt by " << r.by;

  // A member who left gets nothing more.
  c.client().leaveGroup(group);
  a.client().sendGroup(group, "without c");
  ASSERT_TRUE(b.waitForMessages(2));
  a.client().send(c.number(), "fence");
  ASSERT_TRUE(c.waitForMessages(2));
  EXPECT_EQ(bodiesOf(c.messages()), (std::vector<std::string>{"hi all", "fence"}));
}

TEST(Messaging, RefusedSendsStoreNothingAndTheSenderCannotBeForged) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000041");
  RecordingPhone b(host.clientOptions(), "+15550000042");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));

  try {
    a.client().send(b.number(), std::string(65537, 'x'));
    FAIL() << "an oversized body was accepted";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.kind(), ClientError::Kind::refused);
    EXPECT_NE(std::string(e.what()).find("65536"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("remote exception"), std::string::npos) << e.what();
  }
  try {
    a.client().send("+15559999999", "to nobody");
    FAIL() << "a send to an unknown recipient was accepted";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.kind(), ClientError::Kind::refused);
    EXPECT_NE(std::string(e.what()).find("unknown recipient"), std::string::npos) << e.what();
  }
  EXPECT_EQ(countRows(host.dataDir(), "queue"), 0);

  // Exactly 65536 bytes is fine; the recipient sees the session's phone as the sender.
  a.client().send(b.number(), std::string(65536, 'y'));
  b.login();
  ASSERT_TRUE(b.waitForMessages(1));
  EXPECT_EQ(b.messages().size(), 1u);
  EXPECT_EQ(b.messages()[0].body.size(), 65536u);
  EXPECT_EQ(b.messages()[0].from, a.number());
}

TEST(Messaging, SessionCallsBeforeLoginFailFast) {
  RunningHost host;
  host.start();
  client::Client lonely(host.clientOptions());
  try {
    lonely.send("+15550000001", "hi");
    FAIL() << "a send without a session was accepted";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.kind(), ClientError::Kind::notLoggedIn);
  }
  EXPECT_FALSE(lonely.serverInfo().version.empty());
}

}  // namespace
}  // namespace switchboard::integration
