// The store's work per message does not grow with the recipient's backlog:
// against the real host binary, a send to an offline phone runs the same
// number of SQLite VM steps (switchboard_store_write_vm_steps_total) whether 10
// or 10,000 messages already wait for it. A statement that counted or scanned
// the backlog would show as thousands more steps at 10,000.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <limits>
#include <string>
#include <vector>

#include "database_file.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

constexpr const char* kVmSteps = "switchboard_store_write_vm_steps_total";

// Sends `count` messages from `from` to `to`, 64 in flight, each acknowledged.
void sendMany(RecordingPhone& from, const std::string& to, int count, const std::string& tag) {
  std::vector<std::future<client::SendResult>> window;
  for (int n = 0; n < count; ++n) {
    window.push_back(from.client().sendAsync(to, tag + std::to_string(n)));
    if (window.size() == 64 || n + 1 == count) {
      for (auto& pending : window) ASSERT_GT(pending.get().id, 0u);
      window.clear();
    }
  }
}

// The fewest VM steps one stored send ran, over `samples` sends one at a time:
// the fewest, because a periodic write (the expiry sweep) may land beside one.
std::uint64_t stepsPerStoredSend(RunningHost& host, RecordingPhone& from, const std::string& to,
                                 const std::string& tag, int samples = 5) {
  std::uint64_t fewest = std::numeric_limits<std::uint64_t>::max();
  for (int n = 0; n < samples; ++n) {
    auto before = host.metric(kVmSteps);
    EXPECT_TRUE(before.has_value()) << "no " << kVmSteps << " in /metrics";
    if (!before) return 0;
    // The reply comes once the row is durable: its statements have run.
    EXPECT_GT(from.client().send(to, tag + std::to_string(n)).id, 0u);
    auto after = host.metric(kVmSteps);
    if (!after) return 0;
    fewest = std::min(fewest, static_cast<std::uint64_t>(*after - *before));
  }
  return fewest;
}

TEST(StoreWork, AStoredSendCostsTheSameWithABacklogOfTenAndOfTenThousand) {
  RunningHost host;
  host.start();
  RecordingPhone sender(host.clientOptions(), "+15550003001");
  sender.registerAndLogin(host.sms());
  const std::string away = "+15550003002";
  {
    RecordingPhone recipient(host.clientOptions(), away);
    recipient.registerAndLogin(host.sms());
  }  // and it goes away: everything sent to it is stored
  ASSERT_TRUE(waitUntil([&] { return host.metric("switchboard_sessions") == 1.0; }));

  sendMany(sender, away, 10, "backlog ");
  std::uint64_t atTen = stepsPerStoredSend(host, sender, away, "at ten ");
  sendMany(sender, away, 10'000 - 15, "more backlog ");
  ASSERT_EQ(countRows(host.dataDir(), "queue"), 10'000);
  std::uint64_t atTenThousand = stepsPerStoredSend(host, sender, away, "at ten thousand ");

  std::cout << "[ figures  ] SQLite VM steps per stored send: " << atTen << " with 10 waiting, "
            << atTenThousand << " with 10,000 waiting\n";
  ASSERT_GT(atTen, 0u);
  EXPECT_EQ(atTenThousand, atTen);
}

}  // namespace
}  // namespace switchboard::integration
