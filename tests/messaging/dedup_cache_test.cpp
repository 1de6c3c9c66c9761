// DedupCache: bounded, oldest forgotten first, and it says when a miss is
// final (the store cannot hold a row it does not).
#include <gtest/gtest.h>

#include "messaging/dedup_cache.h"

namespace switchboard::messaging {
namespace {

TEST(DedupCache, ReturnsTheFirstSendAndForgetsTheOldestPastItsCapacity) {
  DedupCache cache(2);
  cache.remember("+1", "a", {10, 100});
  cache.remember("+1", "a", {11, 101});  // a repeat keeps the first
  cache.remember("+1", "b", {12, 102});
  ASSERT_TRUE(cache.find("+1", "a").has_value());
  EXPECT_EQ(cache.find("+1", "a")->id, 10u);
  EXPECT_FALSE(cache.find("+2", "a").has_value());  // another sender's "a"
  cache.remember("+1", "c", {13, 103});
  EXPECT_FALSE(cache.find("+1", "a").has_value());
  EXPECT_EQ(cache.find("+1", "c")->id, 13u);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(DedupCache, CoversTheStoreUntilItForgetsAStoredSend) {
  DedupCache cache(2);
  cache.load({{"+1", "stored", {5, 50}}}, true);
  EXPECT_TRUE(cache.coversStore());
  EXPECT_EQ(cache.find("+1", "stored")->id, 5u);
  cache.remember("+1", "memory", {6, 60});
  cache.remember("+1", "memory too", {7, 70});  // forgets "stored": a row only the store has
  EXPECT_FALSE(cache.find("+1", "stored").has_value());
  EXPECT_FALSE(cache.coversStore());
}

TEST(DedupCache, ForgettingSendsTheStoreNeverHadKeepsCoveringIt) {
  DedupCache cache(2);
  cache.remember("+1", "a", {1, 1});
  cache.remember("+1", "b", {2, 2});
  cache.remember("+1", "c", {3, 3});
  EXPECT_TRUE(cache.coversStore());
  cache.rememberStored("+1", "d", {4, 4});
  cache.remember("+1", "e", {5, 5});
  cache.remember("+1", "f", {6, 6});  // forgets "d", which has a row
  EXPECT_FALSE(cache.coversStore());
}

TEST(DedupCache, AStoreTooBigToLoadIsNotCovered) {
  DedupCache cache(4);
  cache.load({{"+1", "a", {1, 1}}}, false);
  EXPECT_FALSE(cache.coversStore());
}

}  // namespace
}  // namespace switchboard::messaging
