// The login deadline (--login-deadline-ms), against the real host binary: a
// connection is closed unless a Gateway.login on it succeeds in time; the
// Gateway itself lifts the deadline (no forwarding capability in front of it).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

std::size_t countOf(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST(LoginDeadline, OnlyASuccessfulLoginKeepsTheConnectionPastTheDeadline) {
  // Long enough for a connect and a login on a loaded machine; registration runs
  // on connections of its own, which the deadline may close.
  RunningHost host({"--login-deadline-ms", "3000"});
  host.start();
  const std::string number = "+15550000601";
  std::string key;
  {
    client::Client registrar(host.clientOptions());
    key = registerPhone(registrar, host.sms(), number, "dev");
  }

  // A login with a wrong key fails and leaves that connection under the deadline.
  client::Client wrong(host.clientOptions());
  std::string refused = refusal([&] { wrong.login(number, std::string(32, 'x')); });
  EXPECT_NE(refused.find("invalid device key"), std::string::npos) << refused;

  client::Client phone(host.clientOptions());
  std::atomic<int> disconnects{0};
  phone.onConnectionState([&](client::ConnectionState state) {
    if (state == client::ConnectionState::disconnected) ++disconnects;
  });
  phone.login(number, key);
  ASSERT_TRUE(phone.isLoggedIn());

  // A connection that never logs in, opened after the login: once the host has
  // closed it, the deadline of every connection opened before it has passed.
  int fd = connectToLoopback(host.port());
  ASSERT_GE(fd, 0);
  char byte = 0;
  ssize_t got = ::recv(fd, &byte, 1, 0);  // blocks until the host closes it
  ::close(fd);
  EXPECT_EQ(got, 0);

  // Closed: the wrong key's connection and the silent one, not the logged-in phone.
  const std::string closed = "not logged in within 3000 ms";
  ASSERT_TRUE(waitUntil([&] { return countOf(host.log(), closed) >= 2; })) << host.log();
  EXPECT_EQ(countOf(host.log(), closed), 2u) << host.log();
  EXPECT_EQ(disconnects.load(), 0);
  EXPECT_TRUE(phone.isLoggedIn());
  EXPECT_TRUE(phone.contacts().empty());  // the session still answers
}

}  // namespace
}  // namespace switchboard::integration
