// PluginHostServices: counters tagged with the plugin's kind and version, in
// one CounterRegistry; each tagged copy caches its counters' cells by name
// (CounterCells), which must count exactly what the registry alone did.
#include "plugin/plugin_host_services.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace switchboard::plugin {
namespace {

auto fields(const CounterSample& s) {
  return std::make_tuple(s.kind, s.version, s.name, s.value);
}

std::vector<std::tuple<std::string, std::string, std::string, std::uint64_t>> listed(
    const CounterRegistry& registry) {
  std::vector<std::tuple<std::string, std::string, std::string, std::uint64_t>> out;
  for (const CounterSample& sample : registry.snapshot()) out.push_back(fields(sample));
  return out;
}

TEST(PluginHostServices, CountersAreTaggedWithKindAndVersion) {
  PluginHostServices root;
  auto tagged = root.forVersion(Kind::presence, "3.1.0");
  tagged->count("fanout", 2);
  tagged->count("fanout", 3);
  root.count("boot", 1);
  EXPECT_EQ(root.counters().value("presence", "3.1.0", "fanout"), 5u);
  EXPECT_EQ(root.counters().value("host", "", "boot"), 1u);
  EXPECT_EQ(root.counters().snapshot().size(), 2u);
  EXPECT_GT(tagged->nowMs(), 1'600'000'000'000);
}

// What the registry listed when every add went through its map: one sample per
// (kind, version, name) ever counted (a delta of 0 included), ordered by kind,
// then version, then name, each with its sum.
TEST(PluginHostServices, ASnapshotListsEveryCounterByKindVersionAndNameWithItsSum) {
  PluginHostServices root;
  auto routing = root.forVersion(Kind::routing, "1.1.0");
  auto presence = root.forVersion(Kind::presence, "1.0.0");
  routing->count("route_offline_queue", 1);
  routing->count("route_local_session", 4);
  routing->count("route_local_session", 1);
  routing->count("route_drop", 0);
  routing->count("", 7);  // a name may be empty, and is not a prefix of another
  routing->count("route", 2);
  presence->count("presence_visible", 3);
  root.count("boot", 1);
  root.counters().add("routing", "1.1.0", "route_local_session", 10);  // the same counter
  root.counters().add("auth", "2.0.0", "code_requested", 1);

  using Row = std::tuple<std::string, std::string, std::string, std::uint64_t>;
  EXPECT_EQ(listed(root.counters()), (std::vector<Row>{
                                         {"auth", "2.0.0", "code_requested", 1},
                                         {"host", "", "boot", 1},
                                         {"presence", "1.0.0", "presence_visible", 3},
                                         {"routing", "1.1.0", "", 7},
                                         {"routing", "1.1.0", "route", 2},
                                         {"routing", "1.1.0", "route_drop", 0},
                                         {"routing", "1.1.0", "route_local_session", 15},
                                         {"routing", "1.1.0", "route_offline_queue", 1},
                                     }));
  EXPECT_EQ(root.counters().value("routing", "1.1.0", "route_local_session"), 15u);
  EXPECT_EQ(root.counters().value("routing", "1.1.0", "route_remote_node"), 0u);  // never made
  EXPECT_EQ(root.counters().snapshot().size(), 8u);
}

// A swap's new version counts apart from the old one; a fresh instance of the
// same version (a settings reload) adds to the same counters.
TEST(PluginHostServices, CopiesOfDifferentVersionsCountSeparatelyAndOfOneVersionTogether) {
  PluginHostServices root;
  auto first = root.forVersion(Kind::routing, "1.0.0");
  auto reloaded = root.forVersion(Kind::routing, "1.0.0");
  auto next = root.forVersion(Kind::routing, "1.1.0");
  auto otherKind = root.forVersion(Kind::offline, "1.0.0");
  const std::pair<PluginHostServices*, std::uint64_t> adds[] = {{first.get(), 1},
                                                                {reloaded.get(), 2},
                                                                {next.get(), 4},
                                                                {otherKind.get(), 8},
                                                                {first.get(), 16}};
  for (const auto& [copy, delta] : adds) copy->count("route_drop", delta);
  EXPECT_EQ(root.counters().value("routing", "1.0.0", "route_drop"), 19u);
  EXPECT_EQ(root.counters().value("routing", "1.1.0", "route_drop"), 4u);
  EXPECT_EQ(root.counters().value("offline", "1.0.0", "route_drop"), 8u);
  EXPECT_EQ(root.counters().snapshot().size(), 3u);
  // A copy gone leaves its counts in the registry.
  next.reset();
  EXPECT_EQ(root.counters().value("routing", "1.1.0", "route_drop"), 4u);
}

// Network threads count at once, through one copy and through two of the same
// version, into names none of them has seen before: every add is in the sums.
TEST(PluginHostServices, ConcurrentAddsFromSeveralThreadsSumExactly) {
  constexpr int kThreads = 4;
  constexpr std::uint64_t kAdds = 20000;
  const std::vector<std::string> names = {"route_local_session", "route_remote_node",
                                          "route_offline_queue", "route_reject", "route_drop"};
  PluginHostServices root;
  auto one = root.forVersion(Kind::routing, "1.0.0");
  auto two = root.forVersion(Kind::routing, "1.0.0");
  std::latch go(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      go.arrive_and_wait();
      for (std::uint64_t i = 0; i < kAdds; ++i) {
        PluginHostServices& copy = (i + static_cast<std::uint64_t>(t)) % 2 == 0 ? *one : *two;
        copy.count(names[i % names.size()], 1 + i % 3);
      }
    });
  }
  for (auto& thread : threads) thread.join();

  std::vector<std::uint64_t> expected(names.size(), 0);
  for (std::uint64_t i = 0; i < kAdds; ++i) expected[i % names.size()] += kThreads * (1 + i % 3);
  for (std::size_t n = 0; n < names.size(); ++n) {
    EXPECT_EQ(root.counters().value("routing", "1.0.0", names[n]), expected[n]) << names[n];
  }
  EXPECT_EQ(root.counters().snapshot().size(), names.size());
}

// Past the names a copy caches, the rest still count (through the registry).
TEST(PluginHostServices, NamesBeyondTheCachedOnesStillCount) {
  constexpr std::size_t kNames = 3 * CounterCells::kCachedNames;
  PluginHostServices root;
  auto tagged = root.forVersion(Kind::auth, "2.0.0");
  for (int round = 1; round <= 3; ++round) {
    for (std::size_t n = 0; n < kNames; ++n) tagged->count("name" + std::to_string(n), n);
  }
  for (std::size_t n = 0; n < kNames; ++n) {
    EXPECT_EQ(root.counters().value("auth", "2.0.0", "name" + std::to_string(n)), 3 * n) << n;
  }
  EXPECT_EQ(root.counters().snapshot().size(), kNames);
}

// Names of one length and the same first and last eight bytes start their
// probes in one slot: each still finds its own counter.
TEST(PluginHostServices, NamesAlikeButForTheirMiddleCountApart) {
  PluginHostServices root;
  auto tagged = root.forVersion(Kind::routing, "1.0.0");
  const std::vector<std::string> names = {"route_a_session", "route_b_session", "route_c_session",
                                          "route__session", "route_ab_session"};
  for (std::size_t n = 0; n < names.size(); ++n) {
    for (std::size_t i = 0; i <= n; ++i) tagged->count(names[n], 1);
  }
  for (std::size_t n = 0; n < names.size(); ++n) {
    EXPECT_EQ(root.counters().value("routing", "1.0.0", names[n]), n + 1) << names[n];
  }
  EXPECT_EQ(root.counters().snapshot().size(), names.size());
}

}  // namespace
}  // namespace switchboard::plugin
