// StoredRows: an upper bound of each phone's rows in the store, never below.
#include "messaging/stored_rows.h"

#include <gtest/gtest.h>

namespace switchboard::messaging {
namespace {

TEST(StoredRows, APhoneIsEmptyOnlyOnceEveryRowCountedIsGone) {
  StoredRows rows;
  EXPECT_TRUE(rows.none("+1"));
  rows.adding("+1", 3);
  rows.adding("+2");
  EXPECT_FALSE(rows.none("+1"));
  rows.gone("+1", 2);
  EXPECT_FALSE(rows.none("+1"));
  rows.gone("+1", 1);
  EXPECT_TRUE(rows.none("+1"));
  EXPECT_FALSE(rows.none("+2"));
  EXPECT_EQ(rows.phones(), 1u);
}

TEST(StoredRows, MoreRowsGoneThanCountedLeavesThePhoneCounted) {
  // Rows the count never saw went: what is left is unknown, so not "none".
  StoredRows rows;
  rows.adding("+1", 1);
  rows.gone("+1", 2);
  EXPECT_FALSE(rows.none("+1"));
  rows.gone("+2", 1);
  EXPECT_TRUE(rows.none("+2"));
}

TEST(StoredRows, AfterStopCountingNoPhoneIsEmptyAndNothingIsKept) {
  // A cluster node: its logins must read the store, whatever was counted.
  StoredRows rows;
  rows.adding("+1", 1);
  rows.stopCounting();
  EXPECT_EQ(rows.phones(), 0u);
  EXPECT_FALSE(rows.none("+1"));
  EXPECT_FALSE(rows.none("+2"));
  rows.adding("+2", 5);
  rows.set("+3", 1);
  EXPECT_EQ(rows.phones(), 0u);
}

TEST(StoredRows, SetAtStartReplacesTheCount) {
  StoredRows rows;
  rows.set("+1", 2);
  rows.gone("+1", 1);
  EXPECT_FALSE(rows.none("+1"));
  rows.gone("+1", 1);
  EXPECT_TRUE(rows.none("+1"));
  rows.set("+3", 0);
  EXPECT_TRUE(rows.none("+3"));
}

}  // namespace
}  // namespace switchboard::messaging
