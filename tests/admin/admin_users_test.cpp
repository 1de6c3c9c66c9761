// Admin user calls against a real host: phones registered through the real
// Gateway with the code read from the SMS outbox.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "admin_test_host.h"

namespace switchboard::admin::testing {
namespace {

using ::testing::HasSubstr;

const std::string kAlice = "+15550001001";
const std::string kBob = "+15550002002";

struct User {
  std::string phone, deviceName;
  std::int64_t createdMs = 0;
  bool online = false;
  std::uint64_t queued = 0;
};

User toUser(proto::UserInfo::Reader u) {
  return {u.getPhone().cStr(), u.getDeviceName().cStr(), u.getCreatedMs(), u.getOnline(),
          u.getQueuedMessages()};
}

class AdminUsersTest : public AdminHostTest {
 protected:
  std::vector<User> users(const std::string& prefix) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.usersRequest();
      request.setPhonePrefix(prefix);
      return request.send().then([](auto&& r) {
        std::vector<User> out;
        for (auto u : r.getUsers()) out.push_back(toUser(u));
        return out;
      });
    });
  }
  User user(const std::string& phone) {
    return client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.userRequest();
      request.setPhone(phone);
      return request.send().then([](auto&& r) { return toUser(r.getUser()); });
    });
  }
  void revokeKey(const std::string& phone) {
    client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.revokeKeyRequest();
      request.setPhone(phone);
      return request.send().ignoreResult();
    });
  }
  void deleteUser(const std::string& phone) {
    client->admin([&](proto::Admin::Client& admin) {
      auto request = admin.deleteUserRequest();
      request.setPhone(phone);
      return request.send().ignoreResult();
    });
  }
};

TEST_F(AdminUsersTest, ListsAndShowsRegisteredUsers) {
  client->registerPhone(phones(), kAlice);
  client->registerPhone(phones(), kBob);
  auto all = users("");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].phone, kAlice);  // ordered by phone
  EXPECT_EQ(all[1].phone, kBob);
  EXPECT_EQ(all[0].deviceName, "admin test phone");
  EXPECT_GT(all[0].createdMs, 0);
  auto prefixed = users("+155500020");
  ASSERT_EQ(prefixed.size(), 1u);
  EXPECT_EQ(prefixed[0].phone, kBob);

  EXPECT_FALSE(user(kAlice).online);
  auto key = client->registerPhone(phones(), kAlice);
  client->login(phones(), kAlice, key, std::make_shared<InboxLog>());
  EXPECT_TRUE(user(kAlice).online);

  EXPECT_THAT(refusal([&] { user("+15550009999"); }), HasSubstr("no user +15550009999"));
  EXPECT_THAT(refusal([&] { user("5550001001"); }), HasSubstr("phone"));
  EXPECT_THAT(refusal([&] { users("abc"); }), HasSubstr("phone prefix 'abc'"));
}

TEST_F(AdminUsersTest, RevokedKeyKicksTheSessionAndStopsWorking) {
  auto key = client->registerPhone(phones(), kAlice);
  auto inbox = std::make_shared<InboxLog>();
  client->login(phones(), kAlice, key, inbox);

  revokeKey(kAlice);
  ASSERT_TRUE(waitUntil([&] { return inbox->kickCount() == 1; }));
  {
    std::lock_guard lock(inbox->mutex);
    EXPECT_EQ(inbox->kicked[0], "device key revoked");
  }
  EXPECT_EQ(user(kAlice).deviceName, "");
  EXPECT_THAT(refusal([&] { client->login(phones(), kAlice, key, std::make_shared<InboxLog>()); }),
              HasSubstr("invalid device key for " + kAlice));
  EXPECT_THAT(refusal([&] { revokeKey(kAlice); }), HasSubstr("has no device key"));
  EXPECT_THAT(refusal([&] { revokeKey("+15550009999"); }), HasSubstr("no user +15550009999"));
}

TEST_F(AdminUsersTest, DeleteRemovesTheUserAndEverythingQueuedForIt) {
  auto key = client->registerPhone(phones(), kAlice);
  client->registerPhone(phones(), kBob);
  EXPECT_EQ(broadcast(kAlice, "while you were away"), 1u);
  EXPECT_EQ(user(kAlice).queued, 1u);

  auto inbox = std::make_shared<InboxLog>();
  auto bobsKey = client->registerPhone(phones(), kBob);
  client->login(phones(), kBob, bobsKey, inbox);
  deleteUser(kBob);
  ASSERT_TRUE(waitUntil([&] { return inbox->kickCount() == 1; }));
  // Bob's key, remembered from his login (messaging/known_users.h), went with him.
  EXPECT_THAT(
      refusal([&] { client->login(phones(), kBob, bobsKey, std::make_shared<InboxLog>()); }),
      HasSubstr("invalid device key for " + kBob));
  deleteUser(kAlice);
  EXPECT_THAT(refusal([&] { user(kAlice); }), HasSubstr("no user " + kAlice));
  EXPECT_TRUE(users("").empty());
  EXPECT_THAT(refusal([&] { deleteUser(kAlice); }), HasSubstr("no user " + kAlice));
  // The host knew Alice (the broadcast above): it no longer does.
  EXPECT_THAT(refusal([&] { broadcast(kAlice, "after the delete"); }),
              HasSubstr("no user " + kAlice));

  // Registering again starts from nothing: the queued message went with the user.
  client->registerPhone(phones(), kAlice);
  EXPECT_EQ(user(kAlice).queued, 0u);
  EXPECT_THAT(refusal([&] { client->login(phones(), kAlice, key, std::make_shared<InboxLog>()); }),
              HasSubstr("invalid device key for " + kAlice));
}

}  // namespace
}  // namespace switchboard::admin::testing
