// Registration codes and device replacement, against the real host binary.
#include <gtest/gtest.h>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

using client::ClientError;

std::string wrongCodeFor(const std::string& code) {
  return code == "00000" ? "11111" : "00000";
}

TEST(Registration, FiveWrongCodesLockTheCode) {
  RunningHost host;
  host.start();
  client::Client phone(host.clientOptions());
  const std::string number = "+15550000101";
  phone.requestCode(number);
  ASSERT_TRUE(waitUntil([&] { return !host.sms().codes(number).empty(); }));
  std::string code = host.sms().codes(number).back();
  ASSERT_EQ(code.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    refusal([&] { phone.verify(number, wrongCodeFor(code), "dev"); });
  }
  std::string locked = refusal([&] { phone.verify(number, code, "dev"); });
  EXPECT_NE(locked.find("too many wrong attempts"), std::string::npos) << locked;
}

TEST(Registration, AnExpiredCodeIsRefused) {
  RunningHost host({"--plugin-setting", "auth.code-ttl-seconds=1"});
  host.start();
  client::Client phone(host.clientOptions());
  const std::string number = "+15550000102";
  EXPECT_EQ(phone.requestCode(number), 1u);
  ASSERT_TRUE(waitUntil([&] { return !host.sms().codes(number).empty(); }));
  // Let the code's 1 s lifetime pass (a precondition, not a measurement).
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  std::string expired =
      refusal([&] { phone.verify(number, host.sms().codes(number).back(), "dev"); });
  EXPECT_NE(expired.find("expired"), std::string::npos) << expired;
}

TEST(Registration, CodeRequestsAreRateLimitedPerPhone) {
  RunningHost host({"--plugin-setting", "auth.max-requests-per-phone=3"});
  host.start();
  client::Client phone(host.clientOptions());
  const std::string number = "+15550000103";
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(phone.requestCode(number)) << "request " << i;
  std::string limited = refusal([&] { phone.requestCode(number); });
  EXPECT_NE(limited.find("too many"), std::string::npos) << limited;
}

TEST(Registration, ANewDeviceKicksTheOldSessionAndRevokesItsKey) {
  RunningHost host;
  host.start();
  RecordingPhone old(host.clientOptions(), "+15550000104");
  old.registerAndLogin(host.sms());
  ASSERT_TRUE(old.client().isLoggedIn());

  RecordingPhone fresh(host.clientOptions(), old.number());
  fresh.setKey(registerPhone(fresh.client(), host.sms(), fresh.number(), "new phone"));
  ASSERT_TRUE(waitUntil([&] {
    auto kicks = old.kicks();
    return !kicks.empty() && !old.client().isLoggedIn();
  }));
  EXPECT_EQ(old.kicks().at(0), "replaced by a new device");

  // The old key logs in no more; the new one does.
  client::Client again(host.clientOptions());
  std::string refused = refusal([&] { again.login(old.number(), old.key()); });
  EXPECT_NE(refused.find("invalid device key"), std::string::npos) << refused;
  fresh.login();
  EXPECT_TRUE(fresh.client().isLoggedIn());
  // The kicked client stayed down: it did not fight the new device for the phone.
  EXPECT_FALSE(old.client().isLoggedIn());
  EXPECT_TRUE(fresh.kicks().empty());
}

// A key that logged in before is checked from memory at its next logins
// (messaging/known_users.h): a new device must still refuse it at once, on the
// connection that verified the new device and on any other.
TEST(Registration, AKeyCheckedFromMemoryIsRefusedOnceANewDeviceIsIn) {
  RunningHost host;
  host.start();
  const std::string number = "+15550000105";
  client::Client first(host.clientOptions());
  std::string oldKey = registerPhone(first, host.sms(), number, "old phone");
  first.login(number, oldKey);  // read from the store, remembered
  first.logout();
  client::Client second(host.clientOptions());
  second.login(number, oldKey);  // checked from memory
  ASSERT_TRUE(second.isLoggedIn());
  second.logout();

  // A wrong key while one is remembered: the same refusal as ever.
  client::Client wrong(host.clientOptions());
  std::string refusedWrong = refusal([&] { wrong.login(number, std::string(32, 'x')); });
  EXPECT_NE(refusedWrong.find("invalid device key for " + number), std::string::npos)
      << refusedWrong;

  client::Client fresh(host.clientOptions());
  std::string newKey = registerPhone(fresh, host.sms(), number, "new phone");
  // As soon as verify returned, without waiting for anything else.
  std::string sameConnection = refusal([&] { fresh.login(number, oldKey); });
  EXPECT_NE(sameConnection.find("invalid device key for " + number), std::string::npos)
      << sameConnection;
  client::Client other(host.clientOptions());
  std::string otherConnection = refusal([&] { other.login(number, oldKey); });
  EXPECT_NE(otherConnection.find("invalid device key for " + number), std::string::npos)
      << otherConnection;

  // The new key logs in on both, the second time from memory; the old one stays refused.
  fresh.login(number, newKey);
  EXPECT_TRUE(fresh.isLoggedIn());
  fresh.logout();
  other.login(number, newKey);
  EXPECT_TRUE(other.isLoggedIn());
  client::Client late(host.clientOptions());
  std::string lateRefusal = refusal([&] { late.login(number, oldKey); });
  EXPECT_NE(lateRefusal.find("invalid device key for " + number), std::string::npos) << lateRefusal;
}

}  // namespace
}  // namespace switchboard::integration
