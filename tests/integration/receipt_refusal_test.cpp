// Receipts for messages a phone never received, against the real host binary:
// refused with the id named, and the whole call changes nothing. The host keeps
// no record of delivered messages (docs/protocol.md): it refuses ids it never
// issued and receipts for one's own messages; a receipt for a real id that went
// to another phone cannot be told apart and is not tested here.
#include <gtest/gtest.h>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;
using client::ReceiptKind;

std::size_t readReceiptsFor(const RecordingPhone& phone, std::uint64_t id) {
  std::size_t count = 0;
  for (const auto& r : phone.receipts()) count += r.id == id && r.kind == ReceiptKind::read;
  return count;
}

TEST(ReceiptRefusal, UnknownAndForeignIdsAreRefusedAndChangeNothing) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000601");
  RecordingPhone b(host.clientOptions(), "+15550000602");
  RecordingPhone c(host.clientOptions(), "+15550000603");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  c.registerAndLogin(host.sms());
  client::SendResult toB = a.client().send(b.number(), "for b");
  client::SendResult toC = a.client().send(c.number(), "for c");
  ASSERT_TRUE(b.waitForMessages(1));
  ASSERT_TRUE(c.waitForMessages(1));
  ASSERT_TRUE(a.waitForReceipt(toB.id, ReceiptKind::delivered));

  // An id that was never issued.
  std::uint64_t never = toC.id + 1000000;
  EXPECT_EQ(refusal([&] { b.client().receipt({never}, ReceiptKind::read); }),
            "unknown message id " + std::to_string(never));
  // b's own message id as its sender: only the recipient may send receipts.
  EXPECT_EQ(refusal([&] { a.client().receipt({toB.id}, ReceiptKind::read); }),
            "unknown message id " + std::to_string(toB.id));
  // A batch with one good id and one unknown: refused as a whole.
  EXPECT_EQ(refusal([&] {
              b.client().receipt({toB.id, never}, ReceiptKind::read);
            }),
            "unknown message id " + std::to_string(never));
  EXPECT_EQ(refusal([&] { b.client().receipt({}, ReceiptKind::read); }), "ids is empty");

  // Nothing of the refused calls reached a: the one valid "read" by b below is
  // the first and only one for that message.
  b.client().receipt({toB.id}, ReceiptKind::read);
  ASSERT_TRUE(a.waitForReceipt(toB.id, ReceiptKind::read));
  // A fence: c's "read", made after every call above returned, reaches a after
  // anything they could have queued for a.
  c.client().receipt({toC.id}, ReceiptKind::read);
  ASSERT_TRUE(a.waitForReceipt(toC.id, ReceiptKind::read));
  EXPECT_EQ(readReceiptsFor(a, toB.id), 1u);
  EXPECT_EQ(readReceiptsFor(a, toC.id), 1u);
  for (const auto& r : a.receipts()) {
    if (r.kind != ReceiptKind::read) continue;
    EXPECT_EQ(r.by, r.id == toB.id ? b.number() : c.number()) << "receipt for " << r.id;
  }
}

}  // namespace
}  // namespace switchboard::integration
