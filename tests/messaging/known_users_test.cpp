// KnownUsers: phone <-> number both ways, and forget() removes both.
#include <gtest/gtest.h>

#include "messaging/known_users.h"

namespace switchboard::messaging {
namespace {

TEST(KnownUsers, MapsPhonesAndNumbersBothWaysUntilForgotten) {
  KnownUsers users;
  EXPECT_FALSE(users.numberOf("+15550001").has_value());
  users.remember("+15550001", 7);
  users.remember("+15550002", 8);
  EXPECT_EQ(users.numberOf("+15550001"), 7u);
  EXPECT_EQ(users.phoneOf(8), "+15550002");
  users.forget("+15550001");
  EXPECT_FALSE(users.numberOf("+15550001").has_value());
  EXPECT_FALSE(users.phoneOf(7).has_value());
  EXPECT_EQ(users.phoneOf(8), "+15550002");
  users.forget("+15550009");  // never known: nothing happens
  EXPECT_EQ(users.numberOf("+15550002"), 8u);
}

}  // namespace
}  // namespace switchboard::messaging
