// DedupCache: bounded, oldest forgotten first, and it says when a miss is
// final (the store cannot hold a row it does not).
#include <gtest/gtest.h>

#include <string>

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

TEST(DedupCache, ARepeatKeepsItsPlaceInTheOrder) {
  DedupCache cache(3);
  cache.remember("+1", "a", {1, 1});
  cache.remember("+1", "b", {2, 2});
  cache.remember("+1", "c", {3, 3});
  cache.remember("+1", "a", {4, 4});  // a repeat: not the newest now
  cache.remember("+1", "d", {5, 5});  // forgets "a", the first remembered
  EXPECT_FALSE(cache.find("+1", "a").has_value());
  EXPECT_EQ(cache.find("+1", "b")->id, 2u);
  EXPECT_EQ(cache.find("+1", "c")->id, 3u);
  EXPECT_EQ(cache.find("+1", "d")->id, 5u);
  EXPECT_EQ(cache.size(), 3u);
}

// Many times round the ring, through every growth of the index: after each
// send exactly the newest `capacity` are found, each with its own answer.
TEST(DedupCache, HoldsExactlyTheNewestSendsAcrossManyWrapArounds) {
  constexpr std::uint64_t kCapacity = 1000;
  DedupCache cache(kCapacity);
  auto id = [](std::uint64_t i) { return std::to_string(i); };
  for (std::uint64_t i = 0; i < 5 * kCapacity; ++i) {
    cache.remember("+1555", id(i), {i + 1, static_cast<std::int64_t>(i)});
    ASSERT_EQ(cache.find("+1555", id(i))->id, i + 1) << i;
    if (i >= kCapacity) {
      ASSERT_FALSE(cache.find("+1555", id(i - kCapacity)).has_value()) << i;
      ASSERT_EQ(cache.find("+1555", id(i + 1 - kCapacity))->id, i + 2 - kCapacity) << i;
    }
  }
  EXPECT_EQ(cache.size(), kCapacity);
  for (std::uint64_t i = 0; i < 5 * kCapacity; ++i) {
    auto found = cache.find("+1555", id(i));
    if (i < 4 * kCapacity) {
      EXPECT_FALSE(found.has_value()) << i;
    } else {
      ASSERT_TRUE(found.has_value()) << i;
      EXPECT_EQ(found->id, i + 1);
      EXPECT_EQ(found->timestamp, static_cast<std::int64_t>(i));
    }
  }
}

TEST(DedupCache, AKeyIsTheSendsSenderAndClientMsgIdBothWhole) {
  DedupCache cache(4);
  EXPECT_EQ(cache.key("+1", "a").hash, cache.key("+1", "a").hash);
  EXPECT_NE(cache.key("+12", "3").hash, cache.key("+1", "23").hash);
  cache.remember(cache.key("+12", "3"), {7, 7});
  EXPECT_EQ(cache.find("+12", "3")->id, 7u);
  EXPECT_FALSE(cache.find("+1", "23").has_value());
  // Longer than the field rules allow (a row from an older store): still whole.
  std::string longId(300, 'x');
  cache.remember("+1", longId, {8, 8});
  EXPECT_EQ(cache.find(cache.key("+1", longId))->id, 8u);
  EXPECT_FALSE(cache.find("+1", std::string(299, 'x')).has_value());
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

// What a send asks at once: the first answer, or whether the store must be
// asked (only on a miss the cache does not cover).
TEST(DedupCache, ALookupAsksTheStoreOnlyOnAMissItDoesNotCover) {
  DedupCache cache(2);
  cache.load({{"+1", "stored", {5, 50}}}, true);
  auto hit = cache.lookup(cache.key("+1", "stored"));
  ASSERT_TRUE(hit.sent.has_value());
  EXPECT_EQ(hit.sent->id, 5u);
  EXPECT_FALSE(hit.askStore);
  auto coveredMiss = cache.lookup(cache.key("+1", "new"));
  EXPECT_FALSE(coveredMiss.sent.has_value());
  EXPECT_FALSE(coveredMiss.askStore);

  cache.remember("+1", "memory", {6, 60});
  cache.remember("+1", "memory too", {7, 70});  // forgets "stored"
  auto miss = cache.lookup(cache.key("+1", "stored"));
  EXPECT_FALSE(miss.sent.has_value());
  EXPECT_TRUE(miss.askStore);
  auto stillAHit = cache.lookup(cache.key("+1", "memory too"));
  ASSERT_TRUE(stillAHit.sent.has_value());
  EXPECT_EQ(stillAHit.sent->id, 7u);
  EXPECT_FALSE(stillAHit.askStore);
}

}  // namespace
}  // namespace switchboard::messaging
