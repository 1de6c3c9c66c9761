// A session's queue in memory (LiveSession's pending items) grows with a burst
// and gives its memory back once drained: whatever it went through, the phone
// gets every message once, in order. Against the real host binary.
#include <gtest/gtest.h>

#include <future>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

// Sends `count` messages numbered from `first` without waiting in between;
// returns their bodies once every send was acknowledged.
std::vector<std::string> sendBurst(RecordingPhone& from, const std::string& to, int first,
                                   int count) {
  std::vector<std::string> bodies;
  std::vector<std::future<client::SendResult>> acks;
  for (int i = first; i < first + count; ++i) {
    bodies.push_back("burst " + std::to_string(i));
    acks.push_back(from.client().sendAsync(to, bodies.back()));
  }
  for (auto& ack : acks) ack.get();
  return bodies;
}

TEST(SessionQueue, ABurstHeldUpByTheReaderArrivesWholeAndInOrder) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000701");
  RecordingPhone b(host.clientOptions(), "+15550000702");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());

  // The reader stalls: Inbox calls stay in flight and the rest waits in the
  // session's queue (hundreds of items: the queue grows, then is taken from the
  // front in batches while it compacts).
  b.holdDeliveries();
  std::vector<std::string> sent = sendBurst(a, b.number(), 0, 700);
  b.releaseDeliveries();
  ASSERT_TRUE(b.waitForMessages(sent.size()));
  EXPECT_EQ(bodiesOf(b.messages()), sent);

  // After it drained (its memory given back), the queue takes a second burst.
  std::vector<std::string> more = sendBurst(a, b.number(), 700, 150);
  sent.insert(sent.end(), more.begin(), more.end());
  ASSERT_TRUE(b.waitForMessages(sent.size()));
  EXPECT_EQ(bodiesOf(b.messages()), sent);
  EXPECT_EQ(b.disconnects(), 0u);
}

}  // namespace
}  // namespace switchboard::integration
