// Restarts, slow readers and reconnects, against the real host binary.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <thread>
#include <vector>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

std::vector<std::string> numbered(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

TEST(Resilience, QueuedMessagesSurviveAHostRestart) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000201");
  RecordingPhone b(host.clientOptions(), "+15550000202");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));
  auto sent = numbered("queued ", 0, 10);
  for (const auto& body : sent) a.client().send(b.number(), body);

  host.stop();
  host.start();
  b.login();
  ASSERT_TRUE(b.waitForMessages(sent.size()));
  EXPECT_EQ(bodiesOf(b.messages()), sent);
  // a's client came back by itself after the restart.
  EXPECT_TRUE(waitUntil([&] { return a.client().isLoggedIn(); }));
}

TEST(Resilience, ASlowReaderIsDisconnectedAndThenGetsEverythingOnceInOrder) {
  // b stops reading: once its queue is full and nothing has come back for the
  // stall time, the host disconnects it; the sender is served throughout.
  RunningHost host({"--session-queue-limit", "50", "--session-stall-ms", "300"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000211");
  RecordingPhone b(host.clientOptions(), "+15550000212");
  RecordingPhone c(host.clientOptions(), "+15550000213");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  c.registerAndLogin(host.sms());

  b.holdDeliveries();  // b's onMessage now blocks: its client reads nothing more
  auto sent = numbered("m", 0, 400);
  for (const auto& body : sent) {
    ASSERT_NO_THROW(a.client().send(b.number(), body)) << body;  // acked all along
  }
  ASSERT_TRUE(waitUntil([&] { return host.log().find("too slow to read") != std::string::npos; }))
      << "the host never disconnected the slow reader";
  EXPECT_EQ(a.disconnects(), 0u);  // the sender was served throughout the stall
  b.releaseDeliveries();

  ASSERT_TRUE(b.waitForMessages(sent.size()));
  EXPECT_EQ(bodiesOf(b.messages()), sent);
  EXPECT_GE(b.disconnects(), 1u);
  EXPECT_TRUE(waitUntil([&] { return b.client().isLoggedIn(); }));
  // Nothing more comes later (a duplicate would be ahead of this fence).
  c.client().send(b.number(), "fence");
  ASSERT_TRUE(b.waitForMessages(sent.size() + 1));
  EXPECT_EQ(b.messages().size(), sent.size() + 1);
  EXPECT_EQ(b.messages().back().body, "fence");
}

// A reader catching up on a backlog makes 1000 "delivered" receipts for the
// sender at once, far past its queue limit: the sender is reading, so it must
// page them in from the store, not be kicked. A full queue alone must never kick
// (that is what this guards); the stall time is set far above what a reading
// phone on a loaded 2-core machine can take between two Inbox calls (the 5 s
// default was seen to kick the sender here under load).
TEST(Resilience, AReceiptBurstDoesNotKickAHealthySender) {
  RunningHost host({"--session-queue-limit", "50", "--session-stall-ms", "120000"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000231");
  RecordingPhone b(host.clientOptions(), "+15550000232");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));
  for (const auto& body : numbered("m", 0, 1000)) a.client().send(b.number(), body);
  b.login();  // 1000 queued messages drain, 1000 receipts go to a
  ASSERT_TRUE(b.waitForMessages(1000));
  ASSERT_TRUE(waitUntil([&] { return a.receipts().size() >= 1000 || a.disconnects() > 0; }));
  EXPECT_EQ(a.disconnects(), 0u);
  EXPECT_TRUE(a.kicks().empty()) << a.kicks().front();
}

TEST(Resilience, AClientReconnectsByItselfAndReceivesQueuedMessagesOnce) {
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000221");
  RecordingPhone b(host.clientOptions(), "+15550000222");
  a.registerAndLogin(host.sms());
  b.registerAndLogin(host.sms());
  auto before = numbered("before ", 0, 20);
  for (const auto& body : before) a.client().send(b.number(), body);
  ASSERT_TRUE(b.waitForMessages(before.size()));

  host.stop();  // b's connection drops; b's client stays up
  ASSERT_TRUE(waitUntil([&] { return !b.client().isLoggedIn(); }));
  host.start();
  // A third phone sends at once, likely while b is still backing off: queued.
  RecordingPhone c(host.clientOptions(), "+15550000223");
  c.registerAndLogin(host.sms());
  auto after = numbered("after ", 0, 20);
  for (const auto& body : after) c.client().send(b.number(), body);

  ASSERT_TRUE(waitUntil([&] { return b.client().isLoggedIn(); }));
  ASSERT_TRUE(b.waitForMessages(before.size() + after.size()));
  auto all = before;
  all.insert(all.end(), after.begin(), after.end());
  EXPECT_EQ(bodiesOf(b.messages()), all);
  auto states = b.connectionStates();
  ASSERT_GE(states.size(), 3u);
  EXPECT_EQ(states.back(), client::ConnectionState::connected);
  EXPECT_GE(b.disconnects(), 1u);
  // The one shutdown told b why before its connection closed.
  EXPECT_EQ(b.kicks(), std::vector<std::string>{"server shutting down"});
  // And no duplicate later: a fence from c, then the count is exact.
  c.client().send(b.number(), "fence");
  ASSERT_TRUE(b.waitForMessages(all.size() + 1));
  EXPECT_EQ(b.messages().size(), all.size() + 1);
}

// Stands where the host was: accepts connections and never answers, like a
// server that hangs. Closes them all when destroyed.
class SilentServer {
 public:
  explicit SilentServer(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
             ::listen(fd_, 16) == 0;
    acceptor_ = std::thread([this]() {
      for (;;) {
        int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) return;  // shut down
        std::lock_guard lock(mutex_);
        clients_.push_back(client);
      }
    });
  }
  ~SilentServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    acceptor_.join();
    for (int client : clients_) ::close(client);
  }
  bool bound() const { return bound_; }
  std::size_t accepted() {
    std::lock_guard lock(mutex_);
    return clients_.size();
  }

 private:
  int fd_ = -1;
  bool bound_ = false;
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<int> clients_;
};

TEST(Resilience, AReconnectToAServerThatNeverAnswersTimesOutAndTriesAgain) {
  RunningHost host;
  host.start();
  // The time-out bounds every call of this client, its first login included, so it
  // is far above what a login takes on a loaded machine; registration goes through
  // a client with the default time-out.
  auto options = host.clientOptions();
  options.callTimeout = std::chrono::seconds(5);
  RecordingPhone a(options, "+15550000241");
  client::Client registrar(host.clientOptions());
  a.setKey(registerPhone(registrar, host.sms(), a.number()));
  a.login();

  host.stop();
  ASSERT_TRUE(waitUntil([&] { return !a.client().isLoggedIn(); }));
  {
    SilentServer silent(host.port());
    ASSERT_TRUE(silent.bound());
    // Each attempt hangs on login until the time-out, then a new one connects: two
    // attempts take two time-outs and a back-off, well inside the 60 s guard.
    ASSERT_TRUE(waitUntil([&] { return silent.accepted() >= 2; }, std::chrono::seconds(60)))
        << "the client never gave up on a server that does not answer";
  }
  host.start();
  EXPECT_TRUE(waitUntil([&] { return a.client().isLoggedIn(); }));
}

}  // namespace
}  // namespace switchboard::integration
