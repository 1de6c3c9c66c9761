#include "plugin/plugin_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <vector>

#include "plugin/plugin_library.h"
#include "plugin_test_support.h"

namespace switchboard::plugin {
namespace {

using ::testing::HasSubstr;
using testing::ManagerTest;

using PluginManagerTest = ManagerTest;

// ---------------------------------------------------------------- loading

TEST_F(PluginManagerTest, FirstLoadStartsTheVersionFromAContentAddressedCopy) {
  auto result = manager_->load(Kind::routing, COUNTER_V1_SO);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.toVersion, "1.0.0");
  EXPECT_EQ(result.fromVersion, "");
  EXPECT_EQ(result.sha256, sha256Hex(COUNTER_V1_SO));
  EXPECT_EQ(routeTotal(), 1u);
  EXPECT_EQ(routeTotal(), 2u);

  auto status = manager_->status(Kind::routing);
  EXPECT_EQ(status.state, "serving");
  EXPECT_EQ(status.currentSha256, result.sha256);
  ASSERT_EQ(status.versions.size(), 1u);
  EXPECT_EQ(status.versions[0].path,
            dir_.path() / "plugins" / "routing" / ("1.0.0-" + result.sha256 + ".so"));
  EXPECT_TRUE(std::filesystem::exists(status.versions[0].path));
  EXPECT_EQ(status.versions[0].calls, 2u);
  EXPECT_EQ(status.versions[0].errors, 0u);
  EXPECT_GT(status.versions[0].p99Ns, 0u);

  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].result, "loaded");
  EXPECT_EQ(rows[0].actor, "operator");
  EXPECT_EQ(rows[0].toVersion, "1.0.0");
  EXPECT_EQ(rows[0].sha256, result.sha256);
}

TEST_F(PluginManagerTest, CallsOnAnEmptySlotReturnAnError) {
  auto result = route();
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.error, "no routing plugin loaded");
}

TEST_F(PluginManagerTest, ACallThroughTheWrongInterfaceIsRefused) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  auto wrong = manager_->slot(Kind::routing).call<AuthPlugin>([](AuthPlugin& plugin) {
    return plugin.verifyCode("+1555", "12345").ok;
  });
  EXPECT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error, "interface does not match the routing slot");
  EXPECT_EQ(routeTotal(), 1u);
}

// ---------------------------------------------------------------- swapping

// Four threads call route() in a tight loop while v1 is swapped to v2 and
// rolled back: no call fails, and the counter (which lives in the plugin and
// crosses versions only as exported bytes, in two formats) equals the calls.
TEST_F(PluginManagerTest, SwapUnderLoadLosesNoCallAndStateSurvivesBothWays) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> failures{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      std::uint64_t last = 0;
      while (!stop.load()) {
        auto result = route();
        calls.fetch_add(1);
        if (!result.ok()) {
          failures.fetch_add(1);
          continue;
        }
        std::uint64_t total = std::stoull(result.value->node);
        if (total <= last) failures.fetch_add(1);  // the total went backwards
        last = total;
      }
    });
  }
  auto waitForCalls = [&](std::uint64_t atLeast) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (calls.load() < atLeast && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  waitForCalls(2000);
  auto up = manager_->load(Kind::routing, COUNTER_V2_SO);
  waitForCalls(calls.load() + 2000);
  auto down = manager_->rollback(Kind::routing);
  waitForCalls(calls.load() + 2000);
  stop.store(true);
  for (auto& caller : callers) caller.join();

  ASSERT_TRUE(up.ok) << up.error;
  ASSERT_TRUE(down.ok) << down.error;
  EXPECT_EQ(up.fromVersion, "1.0.0");
  EXPECT_EQ(up.toVersion, "2.0.0");
  EXPECT_EQ(down.toVersion, "1.0.0");
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(routeTotal(), calls.load() + 1);

  auto status = manager_->status(Kind::routing);
  EXPECT_EQ(status.swaps, 3u);  // first start, up, down
  ASSERT_EQ(status.recentPausesUs.size(), 3u);
  EXPECT_EQ(status.recentPausesUs[1], up.pauseUs);
  EXPECT_EQ(status.recentPausesUs[2], down.pauseUs);

  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].result, "rolled_back");
  EXPECT_EQ(rows[0].fromVersion, "2.0.0");
  EXPECT_EQ(rows[0].toVersion, "1.0.0");
  EXPECT_EQ(rows[0].pauseUs, down.pauseUs);
  EXPECT_EQ(rows[1].result, "swapped");
  EXPECT_EQ(rows[1].fromVersion, "1.0.0");
  EXPECT_EQ(rows[1].toVersion, "2.0.0");
  EXPECT_EQ(rows[1].pauseUs, up.pauseUs);
  EXPECT_EQ(rows[2].result, "loaded");
}

TEST_F(PluginManagerTest, SwapRefusedByImportStateKeepsTheOldVersionServing) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);
  auto refused = manager_->load(Kind::routing, COUNTER_V2_REFUSES_STATE_SO);
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.error, "swap refused by 2.2.0: importState: this build refuses every state");
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(routeTotal(), 2u);
  auto rows = manager_->ledger(Kind::routing, 1);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].result, "rejected");
  EXPECT_EQ(rows[0].toVersion, "2.2.0");
  EXPECT_EQ(rows[0].reason, refused.error);
  EXPECT_EQ(manager_->status(Kind::routing).versions.size(), 1u);
}

TEST_F(PluginManagerTest, AVersionThatRefusesItsSettingsIsNotLoaded) {
  auto options = defaultOptions();
  options.settings[Kind::routing] = {{"label", "ok"}, {"bogus", "1"}};
  start(options);
  auto result = manager_->load(Kind::routing, COUNTER_V1_SO);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.error, "version 1.0.0 refused its settings: unknown setting bogus");
  EXPECT_EQ(manager_->status(Kind::routing).state, "empty");

  options.settings[Kind::routing] = {{"label", "ok"}};
  start(options);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);
}

TEST_F(PluginManagerTest, ReconfigureRestartsTheServingVersionWithItsStateOrKeepsTheOld) {
  start(defaultOptions());
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);

  auto changed = manager_->reconfigure(Kind::routing, {{"label", "new"}});
  ASSERT_TRUE(changed.ok) << changed.error;
  EXPECT_EQ(changed.fromVersion, "2.0.0");
  EXPECT_EQ(changed.toVersion, "2.0.0");
  EXPECT_EQ(currentVersion(), "2.0.0");
  EXPECT_EQ(routeTotal(), 2u);  // the count crossed into the fresh instance
  // A fresh instance of the serving version is no rollback target.
  EXPECT_EQ(manager_->status(Kind::routing).previousVersion, "1.0.0");

  auto refused = manager_->reconfigure(Kind::routing, {{"bogus", "1"}});
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.error, "version 2.0.0 refused its settings: unknown setting bogus");
  EXPECT_EQ(routeTotal(), 3u);
  auto rows = manager_->ledger(Kind::routing, 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].result, "rejected");
  EXPECT_EQ(rows[1].result, "reconfigured");
  EXPECT_EQ(rows[1].actor, "reload");

  // The settings kept are the accepted ones: a rollback's new instance takes them.
  ASSERT_TRUE(manager_->rollback(Kind::routing).ok);
  EXPECT_EQ(currentVersion(), "1.0.0");
}

// ---------------------------------------------------------------- rollback

TEST_F(PluginManagerTest, RollsBackToThePreviousAndToANamedVersion) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_SO).ok);
  EXPECT_EQ(routeTotal(), 2u);
  EXPECT_EQ(manager_->status(Kind::routing).state, "probation");

  auto back = manager_->rollback(Kind::routing);
  ASSERT_TRUE(back.ok) << back.error;
  EXPECT_EQ(back.toVersion, "1.0.0");
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(manager_->status(Kind::routing).state, "serving");
  EXPECT_EQ(routeTotal(), 3u);

  // "Previous" is now 2.0.0: rolling back twice is a swap back.
  auto again = manager_->rollback(Kind::routing);
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_EQ(currentVersion(), "2.0.0");
  EXPECT_EQ(routeTotal(), 4u);

  auto named = manager_->rollback(Kind::routing, std::string("1.0.0"));
  ASSERT_TRUE(named.ok) << named.error;
  EXPECT_EQ(named.fromVersion, "2.0.0");
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(routeTotal(), 5u);

  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 5u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rows[i].result, "rolled_back");
    EXPECT_EQ(rows[i].actor, "operator");
  }
}

TEST_F(PluginManagerTest, InvalidOperationsAreRefusedAndChangeNothing) {
  auto nothing = manager_->rollback(Kind::routing);
  EXPECT_FALSE(nothing.ok);
  EXPECT_EQ(nothing.error, "no routing plugin loaded: nothing to roll back");

  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);

  auto noPrevious = manager_->rollback(Kind::routing);
  EXPECT_FALSE(noPrevious.ok);
  EXPECT_EQ(noPrevious.error, "no previous routing version to roll back to");

  auto notLoaded = manager_->rollback(Kind::routing, std::string("9.9.9"));
  EXPECT_FALSE(notLoaded.ok);
  EXPECT_EQ(notLoaded.error, "version 9.9.9 of routing is not loaded (loaded: 1.0.0)");

  auto serving = manager_->rollback(Kind::routing, std::string("1.0.0"));
  EXPECT_FALSE(serving.ok);
  EXPECT_EQ(serving.error, "version 1.0.0 is already serving");

  auto again = manager_->load(Kind::routing, COUNTER_V1_SO);
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.error, "version 1.0.0 is already serving");

  auto unknownKind = manager_->load(static_cast<Kind>(42), COUNTER_V1_SO);
  EXPECT_FALSE(unknownKind.ok);
  EXPECT_EQ(unknownKind.error, "unknown plugin kind unknown(42)");
  EXPECT_THROW(manager_->slot(static_cast<Kind>(42)), PluginError);

  auto missing = manager_->load(Kind::routing, dir_.path() / "missing.so");
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.error, "no such file: " + (dir_.path() / "missing.so").string());

  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(routeTotal(), 2u);
  auto rows = manager_->ledger();
  ASSERT_EQ(rows.size(), 8u);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].result, i == 6 ? "loaded" : "rejected") << i;  // newest first
  }
  EXPECT_EQ(rows[0].reason, missing.error);
  EXPECT_EQ(rows[1].kind, "unknown(42)");
}

// The last K versions stay mapped for rollback; an older one is unmapped once
// nothing made from it exists (the fixtures are built with -fno-gnu-unique).
TEST_F(PluginManagerTest, KeepsTheLastKVersionsMappedAndUnmapsOlderOnes) {
  auto options = defaultOptions();
  options.keepVersions = 2;
  start(options);
  auto v1 = manager_->load(Kind::routing, COUNTER_V1_SO);
  ASSERT_TRUE(v1.ok) << v1.error;
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_SO).ok);
  auto mapped = [](const std::string& needle) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  std::string v1File = "1.0.0-" + v1.sha256 + ".so";
  EXPECT_TRUE(mapped(v1File));
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_THROWING_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);

  auto status = manager_->status(Kind::routing);
  ASSERT_EQ(status.versions.size(), 2u);
  EXPECT_EQ(status.versions[0].version, "2.1.0");
  EXPECT_EQ(status.versions[1].version, "2.0.0");
  EXPECT_FALSE(mapped(v1File));
  auto gone = manager_->rollback(Kind::routing, std::string("1.0.0"));
  EXPECT_FALSE(gone.ok);
  EXPECT_EQ(gone.error, "version 1.0.0 of routing is not loaded (loaded: 2.1.0, 2.0.0)");
}

// With K = 3, three versions stay loaded: a rollback may skip the previous one
// and go straight to the oldest, migrating state across two formats.
TEST_F(PluginManagerTest, RollsBackPastThePreviousVersionToAnOlderOneKeptLoaded) {
  auto options = defaultOptions();
  options.keepVersions = 3;
  start(options);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_SO).ok);
  EXPECT_EQ(routeTotal(), 2u);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_THROWING_SO).ok);  // throws after 100
  EXPECT_EQ(routeTotal(), 3u);
  auto loaded = manager_->status(Kind::routing).versions;
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[0].version, "2.1.0");
  EXPECT_EQ(loaded[1].version, "2.0.0");
  EXPECT_EQ(loaded[2].version, "1.0.0");

  auto oldest = manager_->rollback(Kind::routing, std::string("1.0.0"));
  ASSERT_TRUE(oldest.ok) << oldest.error;
  EXPECT_EQ(oldest.fromVersion, "2.1.0");
  EXPECT_EQ(oldest.toVersion, "1.0.0");
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(manager_->status(Kind::routing).state, "serving");
  EXPECT_EQ(routeTotal(), 4u);  // 2.1.0's binary state imported by 1.0.0
  EXPECT_EQ(manager_->status(Kind::routing).versions.size(), 3u);

  // "Previous" is now the version just left, not the one skipped.
  auto back = manager_->rollback(Kind::routing);
  ASSERT_TRUE(back.ok) << back.error;
  EXPECT_EQ(back.toVersion, "2.1.0");
  EXPECT_EQ(routeTotal(), 5u);

  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[1].result, "rolled_back");
  EXPECT_EQ(rows[1].fromVersion, "2.1.0");
  EXPECT_EQ(rows[1].toVersion, "1.0.0");
  EXPECT_EQ(rows[1].sha256, sha256Hex(COUNTER_V1_SO));
}

// A start() that throws refuses the swap: the old version keeps serving, with its
// state, and the failed version is not kept for rollback.
TEST_F(PluginManagerTest, AStartThatThrowsLeavesTheOldVersionServing) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  EXPECT_EQ(routeTotal(), 1u);
  auto refused = manager_->load(Kind::routing, COUNTER_V2_START_THROWS_SO);
  EXPECT_FALSE(refused.ok);
  EXPECT_THAT(refused.error, HasSubstr("start"));
  EXPECT_THAT(refused.error, HasSubstr("counter refuses to start"));
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(manager_->status(Kind::routing).state, "serving");
  EXPECT_EQ(routeTotal(), 2u);
  auto versions = manager_->status(Kind::routing).versions;
  ASSERT_EQ(versions.size(), 1u);
  EXPECT_EQ(versions[0].version, "1.0.0");
  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].result, "rejected");
  EXPECT_EQ(rows[0].reason, refused.error);
}

// The abi-check step reads the file before anything of it runs: a library with an
// STB_GNU_UNIQUE symbol (which glibc would never unmap) is refused there, and the
// canary never starts.
TEST_F(PluginManagerTest, AbiCheckRefusesALibraryWithAGnuUniqueSymbol) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  std::vector<std::string> steps;
  auto refused =
      manager_->load(Kind::routing, COUNTER_GNU_UNIQUE_SO, "operator",
                     [&](std::string_view step, std::string_view) { steps.emplace_back(step); });
  EXPECT_FALSE(refused.ok);
  EXPECT_THAT(refused.error, HasSubstr("abi-check: "));
  EXPECT_THAT(refused.error, HasSubstr("defines the STB_GNU_UNIQUE symbol"));
  EXPECT_THAT(refused.error, HasSubstr("-fno-gnu-unique"));
  EXPECT_EQ(steps, (std::vector<std::string>{"copy", "abi-check"}));
  EXPECT_EQ(currentVersion(), "1.0.0");
  EXPECT_EQ(routeTotal(), 1u);
}

// ---------------------------------------------------------------- probation

TEST_F(PluginManagerTest, ProbationRollsBackAVersionThatKeepsFailing) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  std::uint64_t calls = 0;
  for (; calls < 5; ++calls) routeTotal();
  auto swap = manager_->load(Kind::routing, COUNTER_V2_THROWING_SO);
  ASSERT_TRUE(swap.ok) << swap.error;
  EXPECT_EQ(swap.toVersion, "2.1.0");

  // 2.1.0 serves 100 calls, then throws; the 11th error breaches probation
  // (threshold 10) and the control thread rolls back. Keep calling until it
  // did (the deadline is only a guard against a hang).
  std::uint64_t failed = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (currentVersion() != "1.0.0" && std::chrono::steady_clock::now() < deadline) {
    auto result = route();
    ++calls;
    if (!result.ok()) {
      ++failed;
      EXPECT_EQ(result.error, "routing 2.1.0: counter v2 is broken");
    }
  }
  manager_->waitIdle();
  ASSERT_EQ(currentVersion(), "1.0.0");
  EXPECT_GT(failed, 10u);

  // Every call reached a plugin, failed ones included, and the total came
  // back down through exportState/importState.
  EXPECT_EQ(routeTotal(), calls + 1);

  auto status = manager_->status(Kind::routing);
  EXPECT_EQ(status.state, "serving");
  ASSERT_EQ(status.versions.size(), 2u);
  EXPECT_EQ(status.versions[1].version, "2.1.0");
  EXPECT_EQ(status.versions[1].errors, failed);

  auto rows = manager_->ledger(Kind::routing, 1);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].actor, "probation");
  EXPECT_EQ(rows[0].result, "rolled_back");
  EXPECT_EQ(rows[0].fromVersion, "2.1.0");
  EXPECT_EQ(rows[0].toVersion, "1.0.0");
  EXPECT_THAT(rows[0].reason, HasSubstr("probation: 2.1.0 had more than 10 errors"));
}

TEST_F(PluginManagerTest, ErrorsAfterTheProbationWindowDoNotRollBack) {
  auto options = defaultOptions();
  options.probationWindow = std::chrono::milliseconds(0);
  start(options);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V2_THROWING_SO).ok);
  std::uint64_t failed = 0;
  for (int i = 0; i < 150; ++i) failed += route().ok() ? 0 : 1;
  manager_->waitIdle();
  EXPECT_EQ(failed, 50u);
  EXPECT_EQ(currentVersion(), "2.1.0");
  EXPECT_EQ(manager_->status(Kind::routing).state, "serving");
}

// ---------------------------------------------------------------- rejection

struct BadLibrary {
  const char* path;
  const char* expected;  // a substring of the error
};

// Every load here, good or bad, runs under the fixture's 20 s canary time-out: a
// short one would also bound the good loads, which a loaded machine can slow past
// it. The hanging canary never finishes, so it is killed at exactly that time-out
// (a 300 ms time-out is tested on the canary alone, in canary_test).
TEST_F(PluginManagerTest, RejectsEveryBadLibraryWhileTheOldVersionKeepsServing) {
  ASSERT_TRUE(manager_->load(Kind::routing, COUNTER_V1_SO).ok);
  std::uint64_t expectedTotal = 0;
  EXPECT_EQ(routeTotal(), ++expectedTotal);

  const BadLibrary bad[] = {
      {NOT_ELF_FILE, "not a shared object: " NOT_ELF_FILE},
      {COUNTER_NO_DESCRIPTOR_SO, "no plugin descriptor (symbol switchboard_plugin_descriptor)"},
      {COUNTER_WRONG_ABI_SO, "ABI version mismatch: library has 999, host expects 1"},
      {COUNTER_WRONG_KIND_SO, "kind mismatch: library is of kind auth, slot is routing"},
      {COUNTER_SELFTEST_CRASH_SO, "canary crashed: signal 11 (Segmentation fault)"},
      {COUNTER_SELFTEST_HANG_SO, "canary timed out after 20000 ms"},
  };
  for (const auto& library : bad) {
    auto result = manager_->load(Kind::routing, library.path);
    EXPECT_FALSE(result.ok) << library.path;
    EXPECT_THAT(result.error, HasSubstr(library.expected)) << library.path;
    EXPECT_EQ(currentVersion(), "1.0.0");
    EXPECT_EQ(routeTotal(), ++expectedTotal) << "after " << library.path;
  }

  auto rows = manager_->ledger(Kind::routing);
  ASSERT_EQ(rows.size(), 7u);
  for (std::size_t i = 0; i < 6; ++i) {
    const auto& row = rows[5 - i];  // newest first
    EXPECT_EQ(row.result, "rejected");
    EXPECT_EQ(row.fromVersion, "1.0.0");
    EXPECT_THAT(row.reason, HasSubstr(bad[i].expected));
    if (i > 0) {
      EXPECT_EQ(row.sha256, sha256Hex(bad[i].path));
    }
  }
  EXPECT_EQ(rows[6].result, "loaded");
  EXPECT_EQ(manager_->status(Kind::routing).versions.size(), 1u);
}

}  // namespace
}  // namespace switchboard::plugin
