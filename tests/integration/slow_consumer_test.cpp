// Slow consumers against the real host binary: ten phones stop reading while
// five others flood them. The host's memory stays bounded by the per-session
// queue limit (the queue-length gauges never pass it, RSS grows far less than
// the flood), the flood is not lost, and phones that do read keep being served.
// Their latency is printed as figures, never asserted (no timing assertions on
// a shared 2-core machine).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "admin_client.h"
#include "recording_phone.h"
#include "running_host.h"
#include "sanitizer_memory.h"

namespace switchboard::integration {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kSlowPhones = 10;
constexpr int kFlooders = 5;
constexpr int kPerSlowPhone = 1500;       // messages each slow phone is sent
constexpr std::size_t kBodyBytes = 8192;  // 10 x 1500 x 8 KiB = 117 MiB of flood
constexpr std::uint64_t kQueueLimit = 100;
constexpr int kHealthyPairs = 5;

// The host's resident set in bytes, from /proc.
std::uint64_t residentBytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      std::uint64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

// A phone that reads, recording when each message arrived (for latency).
struct TimedReader {
  explicit TimedReader(client::ClientOptions options) : client(std::move(options)) {
    client.onMessage([this](const client::Message& m) {
      auto now = Clock::now();
      std::lock_guard lock(mutex);
      arrivals.emplace_back(m.body, now);
    });
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return arrivals.size();
  }
  client::Client client;
  std::mutex mutex;
  std::vector<std::pair<std::string, Clock::time_point>> arrivals;
};

std::string percentiles(std::vector<double> ms) {
  if (ms.empty()) return "no samples";
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, std::size_t(q * ms.size()))]; };
  std::ostringstream out;
  out.precision(2);
  out << std::fixed << "n=" << ms.size() << " p50=" << at(0.5) << " ms p99=" << at(0.99)
      << " ms max=" << ms.back() << " ms";
  return out.str();
}

TEST(SlowConsumers, TenStalledReadersCostAtMostTheQueueLimitAndOthersAreServed) {
  RunningHost host({"--session-queue-limit", std::to_string(kQueueLimit), "--session-stall-ms",
                    "3600000",  // never kicked during the test: the bound must hold anyway
                    "--plugin-setting", "auth.max-requests-per-peer=1000"});
  host.start();

  auto numbered = [](int base, int i) { return "+1555002" + std::to_string(base * 100 + i); };
  std::vector<std::unique_ptr<RecordingPhone>> slow, flooders;
  for (int i = 0; i < kSlowPhones; ++i) {
    slow.push_back(std::make_unique<RecordingPhone>(host.clientOptions(), numbered(10, i)));
    slow.back()->registerAndLogin(host.sms());
  }
  for (int i = 0; i < kFlooders; ++i) {
    flooders.push_back(std::make_unique<RecordingPhone>(host.clientOptions(), numbered(20, i)));
    flooders.back()->registerAndLogin(host.sms());
  }
  std::vector<std::unique_ptr<RecordingPhone>> pingers;
  std::vector<std::unique_ptr<TimedReader>> readers;
  for (int i = 0; i < kHealthyPairs; ++i) {
    pingers.push_back(std::make_unique<RecordingPhone>(host.clientOptions(), numbered(30, i)));
    pingers.back()->registerAndLogin(host.sms());
    readers.push_back(std::make_unique<TimedReader>(host.clientOptions()));
    client::Client& reader = readers.back()->client;
    reader.login(numbered(40, i), registerPhone(reader, host.sms(), numbered(40, i)));
  }

  // Pings: each healthy pair sends one message at a time, stamped with its send time.
  std::atomic<bool> stopPings{false};
  std::vector<std::vector<std::string>> pinged(kHealthyPairs);
  std::map<std::string, Clock::time_point> sentAt;
  std::mutex sentAtMutex;
  auto pingOnce = [&](int pair, int n) {
    std::string body = "ping " + std::to_string(pair) + " " + std::to_string(n);
    {
      std::lock_guard lock(sentAtMutex);
      sentAt[body] = Clock::now();
    }
    pingers[pair]->client().send(numbered(40, pair), body);
    pinged[pair].push_back(body);
  };
  // Baseline latency before the flood.
  for (int n = 0; n < 20; ++n) {
    for (int pair = 0; pair < kHealthyPairs; ++pair) pingOnce(pair, n);
  }
  for (int pair = 0; pair < kHealthyPairs; ++pair) {
    ASSERT_TRUE(waitUntil([&] { return readers[pair]->count() == 20u; }));
  }
  std::size_t baselineCount = 20;

  for (auto& phone : slow) phone->holdDeliveries();
  std::uint64_t rssBefore = residentBytes(host.pid());
  ASSERT_GT(rssBefore, 0u);

  // Watch RSS and the queue gauges while the flood runs.
  std::atomic<bool> stopWatch{false};
  std::uint64_t rssPeak = rssBefore;
  double queuePeak = 0;
  std::vector<double> queueSamples;
  std::thread watcher([&] {
    while (!stopWatch) {
      rssPeak = std::max(rssPeak, residentBytes(host.pid()));
      if (auto longest = host.metric("switchboard_session_queue_length_max")) {
        queueSamples.push_back(*longest);
        queuePeak = std::max(queuePeak, *longest);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::thread pings([&] {
    for (int n = static_cast<int>(baselineCount); !stopPings; ++n) {
      for (int pair = 0; pair < kHealthyPairs; ++pair) pingOnce(pair, n);
    }
  });

  // The flood: each flooder sends its share to every slow phone, 64 sends in flight.
  std::vector<std::vector<std::vector<std::string>>> flooded(
      kFlooders, std::vector<std::vector<std::string>>(kSlowPhones));
  std::vector<std::thread> floods;
  std::atomic<int> floodErrors{0};
  for (int f = 0; f < kFlooders; ++f) {
    floods.emplace_back([&, f] {
      const std::string padding(kBodyBytes, 'f');
      std::vector<std::future<client::SendResult>> window;
      for (int n = 0; n < kPerSlowPhone / kFlooders; ++n) {
        for (int s = 0; s < kSlowPhones; ++s) {
          std::string body = std::to_string(f) + "/" + std::to_string(n) + " " + padding;
          window.push_back(flooders[f]->client().sendAsync(numbered(10, s), body));
          flooded[f][s].push_back(std::move(body));
          if (window.size() >= 64) {
            for (auto& pending : window) {
              try {
                pending.get();
              } catch (const std::exception&) {
                ++floodErrors;
              }
            }
            window.clear();
          }
        }
      }
      for (auto& pending : window) {
        try {
          pending.get();
        } catch (const std::exception&) {
          ++floodErrors;
        }
      }
    });
  }
  for (auto& flood : floods) flood.join();
  stopPings = true;
  pings.join();
  // The gauges at rest, with every slow phone still stalled.
  ctl::AdminClientOptions adminOptions;
  adminOptions.socketPath = host.adminSocket().string();
  ctl::AdminClient admin(adminOptions);
  auto sessions = admin.sessions("+155500210");
  stopWatch = true;
  watcher.join();
  std::uint64_t rssAfterFlood = residentBytes(host.pid());

  EXPECT_EQ(floodErrors.load(), 0) << "flood sends failed";
  ASSERT_FALSE(queueSamples.empty()) << "no metrics were read";
  EXPECT_LE(queuePeak, static_cast<double>(kQueueLimit)) << "a queue passed the limit";
  EXPECT_GE(queuePeak, static_cast<double>(kQueueLimit) / 2) << "the slow phones never queued";
  ASSERT_EQ(sessions.size(), static_cast<std::size_t>(kSlowPhones));
  for (const auto& session : sessions) {
    EXPECT_LE(session.queueLength, kQueueLimit) << session.phone;
    EXPECT_LE(session.maxQueueLength, kQueueLimit) << session.phone;
  }
  const std::uint64_t flood = std::uint64_t{kSlowPhones} * kPerSlowPhone * kBodyBytes;
  const std::uint64_t growth = rssPeak > rssBefore ? rssPeak - rssBefore : 0;
  std::cout << "[ figures  ] flood " << flood / (1 << 20) << " MiB to " << kSlowPhones
            << " stalled phones (queue limit " << kQueueLimit << "): host RSS "
            << rssBefore / (1 << 20) << " MiB before, peak " << rssPeak / (1 << 20)
            << " MiB, after " << rssAfterFlood / (1 << 20) << " MiB\n";
  // Generous: a tenth of the flood would already mean the queues were not bounded
  // (10 phones x (limit + 4 x 64 in flight) x 8 KiB is under 30 MiB).
  const std::uint64_t factor = testing::kSanitizerMemoryFactor;
  EXPECT_LT(growth, (64u << 20) * factor) << "RSS grew by " << growth / (1 << 20) << " MiB";
  EXPECT_LT(growth, flood / 2 * factor);

  // The healthy pairs were served throughout, in order; their latency is reported.
  std::vector<double> baselineMs, duringMs;
  for (int pair = 0; pair < kHealthyPairs; ++pair) {
    ASSERT_TRUE(waitUntil([&] { return readers[pair]->count() == pinged[pair].size(); }))
        << "pair " << pair;
    std::lock_guard lock(readers[pair]->mutex);
    std::vector<std::string> got;
    for (const auto& [body, at] : readers[pair]->arrivals) {
      got.push_back(body);
      std::lock_guard sentLock(sentAtMutex);
      double ms = std::chrono::duration<double, std::milli>(at - sentAt.at(body)).count();
      (got.size() <= baselineCount ? baselineMs : duringMs).push_back(ms);
    }
    EXPECT_EQ(got, pinged[pair]) << "pair " << pair;
  }
  std::cout << "[ figures  ] healthy pairs' latency before the flood: " << percentiles(baselineMs)
            << "\n[ figures  ] healthy pairs' latency during the flood: " << percentiles(duringMs)
            << "\n";
  for (auto& pinger : pingers) EXPECT_EQ(pinger->disconnects(), 0u);
  for (auto& flooder : flooders) EXPECT_EQ(flooder->disconnects(), 0u);

  // Released, every slow phone gets its whole share, once, in order per sender.
  for (auto& phone : slow) phone->releaseDeliveries();
  for (int s = 0; s < kSlowPhones; ++s) {
    std::size_t expected = static_cast<std::size_t>(kPerSlowPhone / kFlooders) * kFlooders;
    ASSERT_TRUE(waitUntil([&] { return slow[s]->messages().size() >= expected; },
                          std::chrono::seconds(120)))
        << slow[s]->number() << " got " << slow[s]->messages().size();
    std::vector<std::vector<std::string>> bySender(kFlooders);
    auto messages = slow[s]->messages();
    EXPECT_EQ(messages.size(), expected);
    for (const auto& m : messages) {
      auto found = std::find_if(flooders.begin(), flooders.end(),
                                [&](const auto& f) { return f->number() == m.from; });
      ASSERT_NE(found, flooders.end()) << m.from;
      bySender[found - flooders.begin()].push_back(m.body);
    }
    for (int f = 0; f < kFlooders; ++f) {
      EXPECT_TRUE(bySender[f] == flooded[f][s]) << "flooder " << f << " to slow phone " << s;
    }
  }
}

}  // namespace
}  // namespace switchboard::integration
