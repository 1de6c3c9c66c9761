// kill -9 torture against the real host binary: three senders keep sending to a
// phone that is online and to one that is offline, the host is SIGKILLed at
// random points of that traffic a dozen times and restarted on the same data
// dir, and after every restart each acknowledged message arrives exactly once
// (by sender and clientMsgId) and in order per (sender, recipient).
//
// Senders send message n+1 only once n was acknowledged, retrying n with the
// same clientMsgId across failures (the protocol's contract: the server returns
// the first send's id and delivers nothing twice). So what a recipient gets from
// one sender must be exactly 0, 1, 2, ... with no gap and no repeat, at least up
// to the last acknowledged one.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;

constexpr int kSenders = 3;
constexpr int kCycles = 12;
enum Target { kOnline = 0, kOffline = 1 };
const char* const kTargetNames[] = {"online", "offline"};

// "<sender>:<target>:<n>", also the clientMsgId.
std::string bodyFor(int sender, int target, int n) {
  return std::to_string(sender) + ":" + kTargetNames[target] + ":" + std::to_string(n);
}

class Torture {
 public:
  explicit Torture(RunningHost& host) : host_(host) {}

  client::ClientOptions options() const {
    auto options = host_.clientOptions();
    options.reconnectMax = std::chrono::milliseconds(300);
    options.callTimeout = std::chrono::seconds(10);
    return options;
  }

  // Sends until stopped, each message retried until acknowledged.
  void runSender(int index, RecordingPhone& phone, const std::string& online,
                 const std::string& offline) {
    const std::string to[] = {online, offline};
    for (int n = 0; !stop_; ++n) {
      for (int target : {kOnline, kOffline}) {
        std::string body = bodyFor(index, target, n);
        while (true) {
          try {
            phone.client().send(to[target], body, body);
            break;
          } catch (const ClientError& e) {
            if (e.kind() == ClientError::Kind::refused) {
              std::lock_guard lock(mutex_);
              refusals_.push_back(body + ": " + e.what());
              return;
            }
            // Disconnected, timed out or not logged in (the host is down or
            // restarting): wait for the client's own reconnect, then retry.
            if (!waitUntil([&] { return phone.client().isLoggedIn(); }, std::chrono::seconds(60))) {
              std::lock_guard lock(mutex_);
              refusals_.push_back(body + ": never logged in again");
              return;
            }
          }
        }
        std::lock_guard lock(mutex_);
        acked_[index][target] = n + 1;
        ++ackCount_;
      }
    }
  }

  void stop() { stop_ = true; }
  std::uint64_t ackCount() const { return ackCount_; }
  // How many messages each sender had acknowledged to each target.
  std::array<std::array<int, 2>, kSenders> acked() {
    std::lock_guard lock(mutex_);
    return acked_;
  }
  std::vector<std::string> refusals() {
    std::lock_guard lock(mutex_);
    return refusals_;
  }

 private:
  RunningHost& host_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> ackCount_{0};
  std::mutex mutex_;
  std::array<std::array<int, 2>, kSenders> acked_{};
  std::vector<std::string> refusals_;
};

// What `phone` received from each sender, checked to be 0, 1, 2, ... exactly
// (no gap, no repeat, in order). Returns the counts; adds a failure otherwise.
std::array<int, kSenders> contiguousCounts(const RecordingPhone& phone, int target,
                                           const std::string& when) {
  std::array<int, kSenders> next{};
  for (const auto& m : phone.messages()) {
    int sender = -1;
    int n = -1;
    char name[16] = {};
    if (std::sscanf(m.body.c_str(), "%d:%15[a-z]:%d", &sender, name, &n) != 3 || sender < 0 ||
        sender >= kSenders || std::string(name) != kTargetNames[target]) {
      ADD_FAILURE() << when << ": " << phone.number() << " got a stray message '" << m.body << "'";
      continue;
    }
    if (m.clientMsgId != m.body) {
      ADD_FAILURE() << when << ": clientMsgId " << m.clientMsgId << " for " << m.body;
    }
    if (n != next[sender]) {
      ADD_FAILURE() << when << ": " << phone.number() << " got " << m.body << " after "
                    << next[sender] << " message(s) from sender " << sender
                    << (n < next[sender] ? " (a repeat)" : " (a gap: one was lost)");
    }
    next[sender] = std::max(next[sender], n + 1);
  }
  return next;
}

// Waits until `phone` has at least what was acknowledged to it, then checks it.
void expectEverythingAcknowledged(const RecordingPhone& phone, int target,
                                  const std::array<std::array<int, 2>, kSenders>& acked,
                                  const std::string& when) {
  bool arrived = waitUntil(
      [&] {
        std::array<int, kSenders> have{};
        for (const auto& m : phone.messages()) {
          int sender = -1, n = -1;
          char name[16] = {};
          if (std::sscanf(m.body.c_str(), "%d:%15[a-z]:%d", &sender, name, &n) == 3 &&
              sender >= 0 && sender < kSenders) {
            have[sender] = std::max(have[sender], n + 1);
          }
        }
        for (int s = 0; s < kSenders; ++s) {
          if (have[s] < acked[s][target]) return false;
        }
        return true;
      },
      std::chrono::seconds(60));
  auto counts = contiguousCounts(phone, target, when);
  EXPECT_TRUE(arrived) << when << ": acknowledged messages missing at " << phone.number();
  for (int s = 0; s < kSenders; ++s) {
    EXPECT_GE(counts[s], acked[s][target])
        << when << ": sender " << s << " to " << kTargetNames[target];
  }
}

TEST(Kill9Torture, EveryAcknowledgedMessageArrivesOnceAndInOrderAcrossRepeatedSigkills) {
  RunningHost host;
  host.start();
  Torture torture(host);
  std::vector<std::unique_ptr<RecordingPhone>> senders;
  for (int i = 0; i < kSenders; ++i) {
    senders.push_back(
        std::make_unique<RecordingPhone>(torture.options(), "+1555000130" + std::to_string(i)));
    senders.back()->registerAndLogin(host.sms());
  }
  RecordingPhone online(torture.options(), "+15550001310");
  RecordingPhone offline(torture.options(), "+15550001311");
  online.registerAndLogin(host.sms());
  offline.setKey(registerPhone(offline.client(), host.sms(), offline.number()));

  std::vector<std::thread> traffic;
  // However the test body ends (a failed ASSERT returns, a login may throw),
  // the senders stop first: a joinable thread left behind would abort the
  // whole program and hide the failure.
  struct StopAndJoin {
    Torture& torture;
    std::vector<std::thread>& threads;
    ~StopAndJoin() {
      torture.stop();
      for (auto& thread : threads) {
        if (thread.joinable()) thread.join();
      }
    }
  } stopAndJoin{torture, traffic};
  for (int i = 0; i < kSenders; ++i) {
    traffic.emplace_back(
        [&, i] { torture.runSender(i, *senders[i], online.number(), offline.number()); });
  }

  std::random_device entropy;
  unsigned seed = entropy();
  std::mt19937 random(seed);
  std::cout << "[ seed     ] " << seed << "\n";
  std::uniform_int_distribution<int> progress(1, 80);  // acks between two kills
  for (int cycle = 0; cycle < kCycles && !::testing::Test::HasFatalFailure(); ++cycle) {
    std::string when = "after kill " + std::to_string(cycle + 1);
    std::uint64_t target = torture.ackCount() + progress(random);
    ASSERT_TRUE(waitUntil([&] { return torture.ackCount() >= target; }, std::chrono::seconds(120)))
        << when << ": traffic stalled at " << torture.ackCount() << " acks; refusals: "
        << (torture.refusals().empty() ? "none" : torture.refusals().front());
    host.kill9();
    auto acked = torture.acked();  // everything acknowledged before the kill
    host.start();

    expectEverythingAcknowledged(online, kOnline, acked, when);
    offline.login();  // drains its queue, then goes away again
    expectEverythingAcknowledged(offline, kOffline, acked, when);
    offline.client().logout();
  }
  torture.stop();
  for (auto& thread : traffic) thread.join();
  EXPECT_TRUE(torture.refusals().empty()) << torture.refusals().front();

  // At rest: exactly what was acknowledged, nothing more, at both recipients.
  auto acked = torture.acked();
  offline.login();
  expectEverythingAcknowledged(online, kOnline, acked, "at the end");
  expectEverythingAcknowledged(offline, kOffline, acked, "at the end");
  auto onlineCounts = contiguousCounts(online, kOnline, "at the end");
  auto offlineCounts = contiguousCounts(offline, kOffline, "at the end");
  int total = 0;
  for (int s = 0; s < kSenders; ++s) {
    EXPECT_EQ(onlineCounts[s], acked[s][kOnline]) << "sender " << s;
    EXPECT_EQ(offlineCounts[s], acked[s][kOffline]) << "sender " << s;
    total += acked[s][kOnline] + acked[s][kOffline];
  }
  std::cout << "[ figures  ] " << kCycles << " SIGKILLs, " << total
            << " acknowledged messages, each delivered once in order\n";
  for (auto& sender : senders) EXPECT_TRUE(sender->kicks().empty()) << sender->kicks().front();
}

}  // namespace
}  // namespace switchboard::integration
