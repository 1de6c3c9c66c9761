// A second login of the same phone and key, against the real host binary: the
// first session is told "logged in elsewhere", closed, and stays down.
#include <gtest/gtest.h>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

TEST(LoginElsewhere, ASecondLoginKicksTheFirstSessionWhichStaysDown) {
  RunningHost host;
  host.start();
  RecordingPhone sender(host.clientOptions(), "+15550000501");
  RecordingPhone first(host.clientOptions(), "+15550000502");
  sender.registerAndLogin(host.sms());
  first.registerAndLogin(host.sms());
  auto toFirst = sender.client().send(first.number(), "to the first device");
  ASSERT_TRUE(first.waitForMessages(1));
  // The host records the delivery after the first device's Inbox.deliver returns;
  // a login before that record commits may be handed the message again (the
  // protocol allows a repeat after a reconnect). The "delivered" tick is written
  // with that record, so waiting for it leaves nothing to repeat.
  ASSERT_TRUE(sender.waitForReceipt(toFirst.id, client::ReceiptKind::delivered));

  // The same phone and key from a second client (a second app instance).
  RecordingPhone second(host.clientOptions(), first.number());
  second.setKey(first.key());
  second.login();
  ASSERT_TRUE(second.client().isLoggedIn());
  ASSERT_TRUE(waitUntil([&] { return !first.kicks().empty() && !first.client().isLoggedIn(); }))
      << "the first session was not kicked";
  EXPECT_EQ(first.kicks(), std::vector<std::string>{"logged in elsewhere"});

  // New messages go to the second session only; the first did not come back to
  // fight for the phone (a reconnect would kick the second in turn).
  auto toSecond = sender.client().send(first.number(), "to the second device");
  ASSERT_TRUE(second.waitForMessages(1));
  ASSERT_TRUE(sender.waitForReceipt(toSecond.id, client::ReceiptKind::delivered));
  EXPECT_EQ(bodiesOf(second.messages()), std::vector<std::string>{"to the second device"});
  EXPECT_TRUE(second.kicks().empty());
  EXPECT_TRUE(second.client().isLoggedIn());
  EXPECT_FALSE(first.client().isLoggedIn());
  EXPECT_EQ(bodiesOf(first.messages()), std::vector<std::string>{"to the first device"});
  EXPECT_EQ(host.log().find("too slow to read"), std::string::npos);

  // The key stays valid: the first device may log in again on purpose, and then
  // it is the second that is told.
  first.login();
  ASSERT_TRUE(waitUntil([&] { return !second.kicks().empty(); }));
  EXPECT_EQ(second.kicks(), std::vector<std::string>{"logged in elsewhere"});
  sender.client().send(first.number(), "back to the first");
  ASSERT_TRUE(first.waitForMessages(2));
  EXPECT_EQ(first.messages().back().body, "back to the first");
}

}  // namespace
}  // namespace switchboard::integration
