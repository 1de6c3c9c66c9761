// The auth plugin, loaded from its .so: E.164 validation, code issue and
// verification, lockout, expiry on the test clock, rate limits per phone and
// per peer, settings, and state migration between the 1.0.0 and 1.1.0 builds.
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "loaded_plugin.h"

namespace switchboard::plugins::testing {
namespace {

using plugin::AuthPlugin;
using plugin::Kind;

constexpr const char* kPhone = "+15550000001";
constexpr const char* kPeer = "203.0.113.7";

// A code that is certainly not `code`.
std::string otherThan(const std::string& code) {
  return code == "00000" ? "00001" : "00000";
}

class AuthPolicyTest : public ::testing::Test {
 protected:
  PluginPtr<AuthPlugin> load(const char* path,
                             const std::vector<plugin::Plugin::Setting>& settings = {}) {
    return loadPlugin<AuthPlugin>(path, Kind::auth, host, settings);
  }

  TestHost host;
  PluginPtr<AuthPlugin> auth = load(SWITCHBOARD_AUTH_PLUGIN);
};

TEST_F(AuthPolicyTest, RefusesNumbersThatAreNotE164) {
  for (const char* bad : {"", "+", "15550000001", "+1234567", "+1234567890123456", "+1555 000 001",
                          "+1555000000a", "++15550000001"}) {
    const auto decision = auth->requestCode(bad, kPeer);
    EXPECT_FALSE(decision.ok) << bad;
    EXPECT_EQ(decision.error.rfind("not an E.164 phone number: ", 0), 0u) << decision.error;
  }
  EXPECT_TRUE(auth->requestCode("+12345678", kPeer).ok);         // 8 digits
  EXPECT_TRUE(auth->requestCode("+123456789012345", kPeer).ok);  // 15 digits
  EXPECT_EQ(host.counter("code_request_invalid"), 8u);
}

TEST_F(AuthPolicyTest, IssuesFiveDigitCodesInAnSms) {
  std::set<std::string> seen;
  for (int i = 0; i < 20; ++i) {
    const auto decision = auth->requestCode("+1555000" + std::to_string(1000 + i), kPeer);
    ASSERT_TRUE(decision.ok) << decision.error;
    ASSERT_EQ(decision.code.size(), 5u);
    EXPECT_EQ(decision.code.find_first_not_of("0123456789"), std::string::npos);
    EXPECT_EQ(decision.smsText, "Your Switchboard code is " + decision.code);
    EXPECT_EQ(decision.expiresInSeconds, 600u);
    seen.insert(decision.code);
  }
  EXPECT_GT(seen.size(), 15u);  // 20 draws from 100000: a repeat is rare, many repeats is broken
}

TEST_F(AuthPolicyTest, TheRightCodeVerifiesOnce) {
  const auto issued = auth->requestCode(kPhone, kPeer);
  EXPECT_TRUE(auth->verifyCode(kPhone, issued.code).ok);
  const auto again = auth->verifyCode(kPhone, issued.code);
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.error, "no code was requested for this phone");
  EXPECT_EQ(auth->verifyCode("+15559999999", "12345").error,
            "no code was requested for this phone");
}

TEST_F(AuthPolicyTest, FiveWrongAttemptsLockTheCode) {
  const auto issued = auth->requestCode(kPhone, kPeer);
  const std::string wrong = otherThan(issued.code);
  EXPECT_EQ(auth->verifyCode(kPhone, wrong).error, "wrong code, 4 attempts left");
  EXPECT_EQ(auth->verifyCode(kPhone, wrong).error, "wrong code, 3 attempts left");
  EXPECT_EQ(auth->verifyCode(kPhone, "1").error, "wrong code, 2 attempts left");
  EXPECT_EQ(auth->verifyCode(kPhone, wrong).error, "wrong code, 1 attempt left");
  EXPECT_EQ(auth->verifyCode(kPhone, wrong).error, "too many wrong attempts, request a new code");
  const auto right = auth->verifyCode(kPhone, issued.code);
  EXPECT_FALSE(right.ok);
  EXPECT_EQ(right.error, "too many wrong attempts, request a new code");

  const auto fresh = auth->requestCode(kPhone, kPeer);  // a new code unlocks
  EXPECT_TRUE(auth->verifyCode(kPhone, fresh.code).ok);
}

TEST_F(AuthPolicyTest, ANewRequestReplacesTheOldCode) {
  const auto first = auth->requestCode(kPhone, kPeer);
  auto second = auth->requestCode(kPhone, kPeer);
  while (second.code == first.code) second = auth->requestCode(kPhone, "198.51.100.1");
  EXPECT_FALSE(auth->verifyCode(kPhone, first.code).ok);
  EXPECT_TRUE(auth->verifyCode(kPhone, second.code).ok);
}

TEST_F(AuthPolicyTest, CodesExpireOnTheHostClock) {
  const auto issued = auth->requestCode(kPhone, kPeer);
  host.advanceSeconds(599);
  EXPECT_EQ(auth->verifyCode(kPhone, otherThan(issued.code)).error, "wrong code, 4 attempts left");
  host.advanceSeconds(1);
  EXPECT_EQ(auth->verifyCode(kPhone, issued.code).error, "the code has expired, request a new one");
  host.advanceSeconds(3600);  // long expired: pruned, so forgotten
  EXPECT_EQ(auth->verifyCode(kPhone, issued.code).error, "no code was requested for this phone");
}

TEST_F(AuthPolicyTest, LimitsRequestsPerPhoneInASlidingWindow) {
  EXPECT_TRUE(auth->requestCode(kPhone, kPeer).ok);
  host.advanceSeconds(100);
  EXPECT_TRUE(auth->requestCode(kPhone, "198.51.100.1").ok);
  EXPECT_TRUE(auth->requestCode(kPhone, "198.51.100.2").ok);
  const auto limited = auth->requestCode(kPhone, "198.51.100.3");
  EXPECT_FALSE(limited.ok);
  EXPECT_EQ(limited.error, "too many code requests, retry in 500 s");
  EXPECT_TRUE(auth->requestCode("+15550000002", kPeer).ok);  // other phones are not affected
  host.advanceSeconds(499);
  EXPECT_EQ(auth->requestCode(kPhone, kPeer).error, "too many code requests, retry in 1 s");
  host.advanceSeconds(1);  // the first request left the window
  EXPECT_TRUE(auth->requestCode(kPhone, kPeer).ok);
  EXPECT_FALSE(auth->requestCode(kPhone, kPeer).ok);
  EXPECT_EQ(host.counter("code_request_limited"), 3u);
}

TEST_F(AuthPolicyTest, LimitsRequestsPerPeerAddress) {
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(auth->requestCode("+1555000" + std::to_string(1000 + i), kPeer).ok) << i;
  const auto limited = auth->requestCode("+15550009999", kPeer);
  EXPECT_FALSE(limited.ok);
  EXPECT_EQ(limited.error, "too many code requests, retry in 600 s");
  EXPECT_TRUE(auth->requestCode("+15550009999", "198.51.100.1").ok);
}

TEST_F(AuthPolicyTest, SettingsChangeTheLimits) {
  auto strict = load(SWITCHBOARD_AUTH_PLUGIN, {{"max-requests-per-phone", "1"},
                                               {"max-requests-per-peer", "2"},
                                               {"rate-window-seconds", "60"},
                                               {"code-ttl-seconds", "30"},
                                               {"max-attempts", "2"}});
  const auto issued = strict->requestCode(kPhone, kPeer);
  EXPECT_EQ(issued.expiresInSeconds, 30u);
  EXPECT_EQ(strict->requestCode(kPhone, kPeer).error, "too many code requests, retry in 60 s");
  EXPECT_TRUE(strict->requestCode("+15550000002", kPeer).ok);
  EXPECT_FALSE(strict->requestCode("+15550000003", kPeer).ok);
  EXPECT_EQ(strict->verifyCode(kPhone, otherThan(issued.code)).error, "wrong code, 1 attempt left");
  EXPECT_EQ(strict->verifyCode(kPhone, otherThan(issued.code)).error,
            "too many wrong attempts, request a new code");
  host.advanceSeconds(30);
  EXPECT_EQ(strict->verifyCode("+15550000002", "12345").error,
            "the code has expired, request a new one");
}

TEST_F(AuthPolicyTest, ConcurrentRequestsNeverExceedTheLimit) {
  auto limited = load(SWITCHBOARD_AUTH_PLUGIN, {{"max-requests-per-peer", "250"}});
  constexpr int kThreads = 4;
  constexpr int kRequests = 100;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRequests; ++i) {
        const std::string phone = "+1555" + std::to_string(1'000'000 + t * 1000 + i);
        if (limited->requestCode(phone, kPeer).ok) ++accepted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(accepted.load(), 250);
  EXPECT_EQ(host.counter("code_requested"), 250u);
  EXPECT_EQ(host.counter("code_request_limited"), 150u);
}

TEST_F(AuthPolicyTest, ConfigureRefusesUnknownKeysAndBadValuesAndChangesNothing) {
  EXPECT_NE(auth->configure({{"max-attempt", "5"}}).find("unknown setting \"max-attempt\""),
            std::string::npos);
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"max-attempts", "0"},
                                                        {"max-attempts", "five"},
                                                        {"max-attempts", "-1"},
                                                        {"code-ttl-seconds", "600s"},
                                                        {"rate-window-seconds", ""},
                                                        {"max-requests-per-peer", "99999999999"}}) {
    const std::string refused = auth->configure({{"max-requests-per-phone", "1"}, {key, value}});
    EXPECT_NE(refused.find("bad value \"" + value + "\" for " + key), std::string::npos) << refused;
  }
  // The refused batches above included max-requests-per-phone=1; none of it applied.
  EXPECT_TRUE(auth->requestCode(kPhone, kPeer).ok);
  EXPECT_TRUE(auth->requestCode(kPhone, kPeer).ok);
}

TEST_F(AuthPolicyTest, PendingCodesAttemptsAndWindowsCrossVersionsBothWays) {
  const auto issued = auth->requestCode(kPhone, kPeer);
  auth->requestCode("+15550000002", kPeer);
  auth->requestCode("+15550000002", kPeer);
  EXPECT_EQ(auth->verifyCode(kPhone, otherThan(issued.code)).error, "wrong code, 4 attempts left");
  const std::string v1State = auth->exportState();
  EXPECT_EQ(v1State.substr(0, 4), "SBA1");

  auto next = load(SWITCHBOARD_AUTH_PLUGIN_NEXT);
  ASSERT_EQ(versionOf(next), "1.1.0");
  next->importState("1.0.0", v1State);
  const std::string v2State = next->exportState();
  EXPECT_EQ(v2State.substr(0, 4), "SBA2");
  EXPECT_NE(v2State, v1State);

  // Back to 1.0.0 (a rollback) and forward again: the bytes survive unchanged.
  auto back = load(SWITCHBOARD_AUTH_PLUGIN);
  back->importState("1.1.0", v2State);
  EXPECT_EQ(back->exportState(), v1State);

  // On the new version: the attempt made on 1.0.0 counts, the window too.
  EXPECT_EQ(next->verifyCode(kPhone, otherThan(issued.code)).error, "wrong code, 3 attempts left");
  EXPECT_TRUE(next->requestCode("+15550000002", kPeer).ok);  // the third of three
  EXPECT_EQ(next->requestCode("+15550000002", kPeer).error,
            "too many code requests, retry in 600 s");
  EXPECT_TRUE(next->verifyCode(kPhone, issued.code).ok);  // requested on 1.0.0, verified on 1.1.0
  EXPECT_TRUE(back->verifyCode(kPhone, issued.code).ok);  // and on the rolled-back 1.0.0
}

TEST_F(AuthPolicyTest, ExportPrunesWhatNoLongerMatters) {
  auth->requestCode(kPhone, kPeer);
  const std::string busy = auth->exportState();
  host.advanceSeconds(1201);  // window passed; code expired for more than one more ttl
  const std::string idle = auth->exportState();
  EXPECT_LT(idle.size(), busy.size());
  auto empty = load(SWITCHBOARD_AUTH_PLUGIN);
  EXPECT_EQ(idle, empty->exportState());
}

TEST_F(AuthPolicyTest, RefusesStateItCannotReadAndKeepsItsOwn) {
  const auto issued = auth->requestCode(kPhone, kPeer);
  const std::string state = auth->exportState();
  EXPECT_THROW(auth->importState("1.1.0", state), std::exception);
  EXPECT_THROW(auth->importState("0.9.0", state), std::exception);
  EXPECT_THROW(auth->importState("1.0.0", state.substr(0, state.size() - 3)), std::exception);
  EXPECT_THROW(auth->importState("1.0.0", state + "x"), std::exception);
  EXPECT_TRUE(auth->verifyCode(kPhone, issued.code).ok);
}

TEST_F(AuthPolicyTest, SelfTestPassesOnBothBuilds) {
  const auto result = auth->selfTest();
  EXPECT_TRUE(result.ok) << result.message;
  const auto nextResult = load(SWITCHBOARD_AUTH_PLUGIN_NEXT)->selfTest();
  EXPECT_TRUE(nextResult.ok) << nextResult.message;
  // The self test ran on a scratch instance: nothing leaked into this one.
  EXPECT_EQ(auth->verifyCode("+15550000001", "00000").error,
            "no code was requested for this phone");
}

}  // namespace
}  // namespace switchboard::plugins::testing
