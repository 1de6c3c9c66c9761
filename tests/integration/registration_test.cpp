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

}  // namespace
}  // namespace switchboard::integration
