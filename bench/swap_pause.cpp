// swap_pause: how long a plugin swap stops the callers, measured under load.
//
// N threads call the routing plugin in a tight loop while the manager swaps it
// M times, alternating between two versions (v1 <-> v2, full load path:
// staging, canary process, dlopen, export/import). Prints calls/s, the swap
// pause (gate closed to gate open) p50/p99/max in microseconds, and failed and
// lost calls (both must be 0: the fixture counts every call in its state,
// which crosses each swap as bytes).
//
// Then compares the call gate against std::shared_mutex on the same threads:
// the cost of entering/leaving, and how long a writer waits to get in.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "plugin/call_gate.h"
#include "plugin/canary.h"
#include "plugin/plugin_host_services.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"

namespace {

using namespace switchboard;
using Clock = std::chrono::steady_clock;

std::uint64_t percentileOf(std::vector<std::uint64_t> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

// Per-thread enter/leave rate and the time a closer waits, for one gate type.
template <class Enter, class Leave, class Close, class Open>
void compareGate(const char* name, int threads, Enter enter, Leave leave, Close close, Open open) {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> passes{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < threads; ++i) {
    callers.emplace_back([&] {
      std::uint64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        enter();
        leave();
        ++mine;
      }
      passes.fetch_add(mine);
    });
  }
  std::vector<std::uint64_t> waits;
  auto began = Clock::now();
  auto end = began + std::chrono::milliseconds(500);
  while (Clock::now() < end) {
    auto t0 = Clock::now();
    close();
    auto waited = Clock::now() - t0;
    open();
    waits.push_back(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count()));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop.store(true);
  for (auto& caller : callers) caller.join();
  double seconds = std::chrono::duration<double>(Clock::now() - began).count();
  std::printf("  %-18s %12.0f passes/s   close wait p50 %6.1f us  p99 %8.1f us  max %8.1f us\n",
              name, static_cast<double>(passes.load()) / seconds,
              static_cast<double>(percentileOf(waits, 0.50)) / 1000.0,
              static_cast<double>(percentileOf(waits, 0.99)) / 1000.0,
              static_cast<double>(percentileOf(waits, 1.0)) / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "canary") == 0) return plugin::runCanary(argc, argv);

  CLI::App app{"swap_pause: plugin swap pause under load"};
  int threads = 2;
  int swaps = 200;
  std::string v1 = COUNTER_V1_SO;
  std::string v2 = COUNTER_V2_SO;
  std::string dataDir;
  app.add_option("-t,--threads", threads, "calling threads")->check(CLI::Range(1, 256));
  app.add_option("-s,--swaps", swaps, "swaps, alternating v1/v2")->check(CLI::Range(1, 100000));
  app.add_option("--v1", v1, "version 1 library");
  app.add_option("--v2", v2, "version 2 library");
  app.add_option("--data-dir", dataDir, "data dir (default: a fresh temp dir, removed)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  bool ownDir = dataDir.empty();
  if (ownDir) {
    std::random_device random;
    dataDir =
        (std::filesystem::temp_directory_path() / ("sb-swap-pause-" + std::to_string(random())))
            .string();
  }
  std::uint64_t calls = 0;
  std::uint64_t failed = 0;
  std::uint64_t finalTotal = 0;
  std::vector<std::uint64_t> pauses;
  std::vector<std::uint64_t> quiesces;
  std::uint64_t refusedSwaps = 0;
  double seconds = 0;
  {
    store::StoreOptions storeOptions;
    storeOptions.dataDir = dataDir;
    auto store = store::Store::open(storeOptions);
    plugin::PluginHostServices host;
    plugin::PluginManagerOptions options;
    options.dataDir = dataDir;
    options.canary.executable = std::filesystem::read_symlink("/proc/self/exe");
    plugin::PluginManager manager(options, host, *store);
    auto first = manager.load(plugin::Kind::routing, v1, "bench");
    if (!first.ok) {
      std::fprintf(stderr, "cannot load %s: %s\n", v1.c_str(), first.error.c_str());
      return 1;
    }

    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> callCount{0};
    std::atomic<std::uint64_t> failCount{0};
    auto route = [&] {
      return manager.call<plugin::RoutingPlugin>([](plugin::RoutingPlugin& p) {
        plugin::RoutingPlugin::Envelope envelope;
        envelope.from = "alice";
        envelope.to = "bob";
        envelope.bodyBytes = 5;
        return p.route(envelope);
      });
    };
    std::vector<std::thread> callers;
    auto began = Clock::now();
    for (int i = 0; i < threads; ++i) {
      callers.emplace_back([&] {
        std::uint64_t mine = 0;
        std::uint64_t myFailures = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          if (!route().ok()) ++myFailures;
          ++mine;
        }
        callCount.fetch_add(mine);
        failCount.fetch_add(myFailures);
      });
    }
    for (int i = 0; i < swaps; ++i) {
      auto result = manager.load(plugin::Kind::routing, i % 2 == 0 ? v2 : v1, "bench");
      if (!result.ok) {
        ++refusedSwaps;
        std::fprintf(stderr, "swap %d refused: %s\n", i, result.error.c_str());
      }
      pauses.push_back(result.pauseUs);
      quiesces.push_back(result.quiesceUs);
    }
    stop.store(true);
    for (auto& caller : callers) caller.join();
    seconds = std::chrono::duration<double>(Clock::now() - began).count();
    calls = callCount.load();
    failed = failCount.load();
    auto last = route();
    finalTotal = last.ok() ? std::stoull(last.value->node) : 0;
  }
  if (ownDir) std::filesystem::remove_all(dataDir);

  std::uint64_t counted = finalTotal > 0 ? finalTotal - 1 : 0;  // minus the check call
  std::uint64_t lost = calls > counted ? calls - counted : 0;
  std::printf("swap_pause: %d threads, %d swaps (v1<->v2, full load with canary)\n", threads,
              swaps);
  std::printf("  calls          %llu in %.2f s = %.0f calls/s\n",
              static_cast<unsigned long long>(calls), seconds,
              static_cast<double>(calls) / seconds);
  std::printf("  swap pause     p50 %llu us  p99 %llu us  max %llu us\n",
              static_cast<unsigned long long>(percentileOf(pauses, 0.50)),
              static_cast<unsigned long long>(percentileOf(pauses, 0.99)),
              static_cast<unsigned long long>(percentileOf(pauses, 1.0)));
  std::printf(
      "   of which quiesce (calls in flight leaving) p50 %llu us  p99 %llu us  max %llu us\n",
      static_cast<unsigned long long>(percentileOf(quiesces, 0.50)),
      static_cast<unsigned long long>(percentileOf(quiesces, 0.99)),
      static_cast<unsigned long long>(percentileOf(quiesces, 1.0)));
  std::printf("  failed calls   %llu\n", static_cast<unsigned long long>(failed));
  std::printf("  lost calls     %llu (plugin counted %llu of %llu)\n",
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(counted),
              static_cast<unsigned long long>(calls));
  std::printf("  refused swaps  %llu\n", static_cast<unsigned long long>(refusedSwaps));

  std::printf("call gate vs std::shared_mutex, %d threads entering/leaving, a closer every 2 ms:\n",
              threads);
  plugin::CallGate gate;
  compareGate(
      "CallGate", threads, [&] { gate.enter(); }, [&] { gate.leave(); }, [&] { gate.close(); },
      [&] { gate.open(); });
  std::shared_mutex mutex;
  compareGate(
      "std::shared_mutex", threads, [&] { mutex.lock_shared(); }, [&] { mutex.unlock_shared(); },
      [&] { mutex.lock(); }, [&] { mutex.unlock(); });
  return failed == 0 && lost == 0 && refusedSwaps == 0 ? 0 : 1;
}
