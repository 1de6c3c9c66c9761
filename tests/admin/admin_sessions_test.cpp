// Admin session and traffic calls against a real host with logged-in phones.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "admin_test_host.h"

namespace switchboard::admin::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kAlice = "+15550001001";
const std::string kBob = "+15550002002";

struct SessionView {
  std::string phone, peer;
  std::uint32_t thread = 0;
  std::int64_t sinceMs = 0;
  std::uint64_t sessionId = 0;
};

std::vector<SessionView> toSessions(capnp::List<proto::SessionInfo>::Reader list) {
  std::vector<SessionView> out;
  for (auto s : list) {
    out.push_back(
        {s.getPhone().cStr(), s.getPeer().cStr(), s.getThread(), s.getSinceMs(), s.getSessionId()});
  }
  return out;
}

std::vector<std::string> phonesOf(const std::vector<SessionView>& sessions) {
  std::vector<std::string> out;
  for (const auto& s : sessions) out.push_back(s.phone);
  return out;
}

class AdminSessionsTest : public AdminHostTest {
 protected:
  void SetUp() override {
    AdminHostTest::SetUp();
    client->login(phones(), kAlice, client->registerPhone(phones(), kAlice), alice);
    client->login(phones(), kBob, client->registerPhone(phones(), kBob), bob);
  }

  std::vector<SessionView> sessions(const std::string& prefix, std::uint32_t minQueue) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.sessionsRequest();
      request.setPhonePrefix(prefix);
      request.setMinQueue(minQueue);
      return request.send().then([](auto&& r) { return toSessions(r.getSessions()); });
    });
  }
  SessionView session(const std::string& phone) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.sessionRequest();
      request.setPhone(phone);
      return request.send().then([](auto&& r) {
        auto s = r.getSession();
        return SessionView{s.getPhone().cStr(), s.getPeer().cStr(), s.getThread(), s.getSinceMs(),
                           s.getSessionId()};
      });
    });
  }
  void kick(const std::string& phone, const std::string& reason) {
    client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.kickRequest();
      request.setPhone(phone);
      request.setReason(reason);
      return request.send().ignoreResult();
    });
  }

  std::shared_ptr<InboxLog> alice = std::make_shared<InboxLog>();
  std::shared_ptr<InboxLog> bob = std::make_shared<InboxLog>();
};

TEST_F(AdminSessionsTest, ListsFiltersAndShowsSessions) {
  EXPECT_THAT(phonesOf(sessions("", 0)), ElementsAre(kAlice, kBob));
  EXPECT_THAT(phonesOf(sessions("+155500020", 0)), ElementsAre(kBob));
  EXPECT_TRUE(sessions("", 1000000).empty());

  auto one = session(kAlice);
  EXPECT_EQ(one.phone, kAlice);
  EXPECT_LT(one.thread, 2u);
  EXPECT_THAT(one.peer, HasSubstr("127.0.0.1"));
  EXPECT_GT(one.sinceMs, 0);
  EXPECT_GT(one.sessionId, 0u);

  auto longest = client->admin([&](proto::Admin::Client& admin) {
    return admin.queuesRequest().send().then([](auto&& r) { return toSessions(r.getSessions()); });
  });
  EXPECT_EQ(longest.size(), 2u);

  EXPECT_THAT(refusal([&] { session("+15550009999"); }),
              HasSubstr("no live session for +15550009999"));
  EXPECT_THAT(refusal([&] { sessions("1555", 0); }), HasSubstr("phone prefix '1555'"));
}

TEST_F(AdminSessionsTest, KickTellsThePhoneWhyAndEndsItsSession) {
  kick(kBob, "maintenance");
  ASSERT_TRUE(waitUntil([&] { return bob->kickCount() == 1; }));
  {
    std::lock_guard lock(bob->mutex);
    EXPECT_EQ(bob->kicked[0], "maintenance");
  }
  ASSERT_TRUE(waitUntil([&] { return sessions("", 0).size() == 1; }));
  EXPECT_THAT(refusal([&] { kick(kBob, ""); }), HasSubstr("no live session for " + kBob));
  EXPECT_THAT(refusal([&] { kick("bob", ""); }), HasSubstr("phone"));
  EXPECT_THAT(refusal([&] { kick(kAlice, std::string(201, 'x')); }), HasSubstr("200 bytes"));
  EXPECT_EQ(alice->kickCount(), 0u);

  kick(kAlice, "");
  ASSERT_TRUE(waitUntil([&] { return alice->kickCount() == 1; }));
  std::lock_guard lock(alice->mutex);
  EXPECT_EQ(alice->kicked[0], "kicked by an operator");
}

TEST_F(AdminSessionsTest, BroadcastReachesPhonesAndStatsCountTraffic) {
  EXPECT_EQ(broadcast(kAlice, "hello alice"), 1u);
  ASSERT_TRUE(waitUntil([&] { return alice->messageCount() == 1; }));
  {
    std::lock_guard lock(alice->mutex);
    EXPECT_EQ(alice->messages[0],
              std::make_pair(std::string("system"), std::string("hello alice")));
  }
  EXPECT_EQ(broadcast("", "hello everyone"), 2u);
  ASSERT_TRUE(waitUntil([&] { return alice->messageCount() == 2 && bob->messageCount() == 1; }));
  EXPECT_THAT(refusal([&] { broadcast("+15550009999", "x"); }), HasSubstr("no user +15550009999"));
  EXPECT_THAT(refusal([&] { broadcast(kAlice, ""); }), HasSubstr("body is empty"));

  struct Stats {
    std::uint64_t connections, sessions, logins, registrations, codes, in, out, commits, sms;
  };
  Stats stats{};
  ASSERT_TRUE(waitUntil([&] {
    stats = client->admin([&](proto::Admin::Client& admin) {
      return admin.statsRequest().send().then([](auto&& r) {
        auto s = r.getStats();
        return Stats{s.getConnections(),   s.getSessions(),       s.getLogins(),
                     s.getRegistrations(), s.getCodesRequested(), s.getMessagesIn(),
                     s.getMessagesOut(),   s.getStoreCommits(),   s.getSmsSent()};
      });
    });
    return stats.out == 3 &&
           stats.connections == 2;  // deliveries are counted as the phones' returns arrive
  }));
  EXPECT_EQ(stats.sessions, 2u);
  EXPECT_EQ(stats.connections, 2u);
  EXPECT_EQ(stats.logins, 2u);
  EXPECT_EQ(stats.registrations, 2u);
  EXPECT_EQ(stats.codes, 2u);
  EXPECT_EQ(stats.in, 3u);
  EXPECT_EQ(stats.sms, 2u);
  EXPECT_GT(stats.commits, 0u);
}

}  // namespace
}  // namespace switchboard::admin::testing
