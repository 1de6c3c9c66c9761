// One slot per plugin kind: the version serving it, the versions kept loaded
// behind it, and the call path every use of the plugin goes through.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "metrics/latency_histogram.h"
#include "plugin/call_gate.h"
#include "plugin/plugin_host_services.h"
#include "plugin/plugin_library.h"
#include "switchboard/plugin_api.h"

namespace switchboard::plugin {

// The kind a plugin interface belongs to, so call<RoutingPlugin> can check it.
template <class Interface>
constexpr Kind kindOf() {
  if constexpr (std::is_same_v<Interface, RoutingPlugin>) return Kind::routing;
  if constexpr (std::is_same_v<Interface, AuthPlugin>) return Kind::auth;
  if constexpr (std::is_same_v<Interface, PresencePlugin>) return Kind::presence;
  if constexpr (std::is_same_v<Interface, OfflinePlugin>) return Kind::offline;
}

// The outcome of one call into a plugin: a value, or the error that stood for
// it (an exception the plugin threw, or no plugin loaded). Plain data only:
// nothing from the plugin's library survives in it.
template <class R>
struct CallResult {
  using Value = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
  std::optional<Value> value;
  std::string error;
  bool ok() const { return value.has_value(); }
};

// One version of a kind known to a slot: its mapped library and its counters.
// Shared by the slot's history and by the instance serving from it; the
// counters are atomics written by calling threads.
struct VersionRecord {
  std::shared_ptr<PluginLibrary> library;
  std::string version;
  std::string buildId;
  std::string sha256;
  std::filesystem::path path;
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> errors{0};
  metrics::LatencyHistogram latencyNs;
};

// The running instance of a version. `services` is what the instance was
// created with, so it is declared before (and destroyed after) the instance.
struct ActiveVersion {
  std::shared_ptr<VersionRecord> record;
  std::unique_ptr<PluginHostServices> ownedServices;  // null: the host's own is used
  std::unique_ptr<PluginInstance> instance;
  Plugin& plugin() const { return instance->plugin(); }
};

struct SwapResult {
  bool ok = false;
  std::string error;  // which step refused, and the plugin's message
  std::uint64_t pauseUs = 0;
  // The part of the pause spent waiting for calls in flight to leave (the
  // rest is export/import/start): tells a slow plugin from a slow caller.
  std::uint64_t quiesceUs = 0;
};

struct VersionSnapshot {
  std::string version;
  std::string buildId;
  std::string sha256;
  std::filesystem::path path;
  bool current = false;
  std::uint64_t calls = 0;
  std::uint64_t errors = 0;
  std::uint64_t p50Ns = 0;
  std::uint64_t p99Ns = 0;
};

// What status() reports for one kind.
struct KindStatus {
  Kind kind = Kind::routing;
  std::string state = "empty";  // "empty", "serving", "probation"
  std::optional<std::string> currentVersion;
  std::string currentBuildId;
  std::string currentSha256;
  std::optional<std::string> previousVersion;
  bool inProbation = false;
  std::int64_t probationRemainingMs = 0;
  std::vector<VersionSnapshot> versions;      // most recently serving first
  std::vector<std::uint64_t> recentPausesUs;  // oldest first
  std::uint64_t pauseP50Us = 0;
  std::uint64_t pauseP99Us = 0;
  std::uint64_t pauseMaxUs = 0;
  std::uint64_t swaps = 0;
};

// Calls run on any thread, concurrently, through call(); everything else
// (swap, history, probation set-up) is done by one thread at a time, the
// plugin manager's control thread. Status readers may run on any thread.
// A swap closes the call gate: calls arriving during it wait, calls in flight
// finish first, so no call is refused or lost because of a swap.
class PluginSlot {
 public:
  PluginSlot(Kind kind, std::size_t keepVersions);
  ~PluginSlot();
  PluginSlot(const PluginSlot&) = delete;
  PluginSlot& operator=(const PluginSlot&) = delete;

  Kind kind() const { return kind_; }

  // Runs f(Interface&) on the serving instance. A throw from the plugin is
  // caught, counted as an error of that version and returned as the error.
  template <class Interface, class F>
  CallResult<std::invoke_result_t<F&, Interface&>> call(F&& f);

  // ---- control thread only

  // Runs the swap protocol: close the gate -> old.exportState ->
  // next.importState(oldVersion, bytes) -> next.start -> publish -> open the
  // gate -> old.stop. On a throw from export/import/start, `next` is
  // destroyed and the old version keeps serving. The pause (close to open)
  // is recorded either way.
  SwapResult swap(std::unique_ptr<ActiveVersion> next);

  std::shared_ptr<VersionRecord> findVersion(const std::string& version) const;
  std::shared_ptr<VersionRecord> currentRecord() const;
  std::optional<std::string> previousVersion() const;

  // Watches `record` for `window`: once its errors since now exceed
  // `threshold`, `onBreach` is called (once, on the calling thread; it must
  // only post work elsewhere).
  void beginProbation(const std::shared_ptr<VersionRecord>& record,
                      std::chrono::milliseconds window, std::uint64_t threshold);
  void endProbation();
  // The version on probation, if its window is still open.
  std::shared_ptr<VersionRecord> probationRecord() const;
  void setBreachHandler(std::function<void(std::string version)> onBreach);

  KindStatus snapshot() const;

 private:
  void noteError(VersionRecord& record);
  void remember(const std::shared_ptr<VersionRecord>& record);

  const Kind kind_;
  const std::size_t keepVersions_;
  CallGate gate_;
  std::atomic<ActiveVersion*> serving_{nullptr};

  // Probation, read on the error path without a lock.
  std::atomic<VersionRecord*> probation_{nullptr};
  std::atomic<std::int64_t> probationDeadlineNs_{0};  // steady_clock
  std::atomic<std::uint64_t> probationBaseline_{0};
  std::atomic<std::uint64_t> probationThreshold_{0};
  std::atomic<bool> breachReported_{false};
  std::function<void(std::string)> onBreach_;

  mutable std::mutex mutex_;  // guards the members below (not the call path)
  std::unique_ptr<ActiveVersion> active_;
  std::shared_ptr<VersionRecord> probationOwned_;
  std::deque<std::shared_ptr<VersionRecord>> history_;  // most recently serving first
  std::optional<std::string> previousVersion_;
  std::deque<std::uint64_t> recentPausesUs_;
  metrics::LatencyHistogram pausesUs_;
};

// ---------------------------------------------------------------- inline

template <class Interface, class F>
CallResult<std::invoke_result_t<F&, Interface&>> PluginSlot::call(F&& f) {
  using R = std::invoke_result_t<F&, Interface&>;
  CallResult<R> result;
  struct Pass {
    CallGate& gate;
    ~Pass() { gate.leave(); }
  };
  gate_.enter();
  Pass pass{gate_};
  ActiveVersion* active = serving_.load(std::memory_order_acquire);
  if (active == nullptr) {
    result.error = "no " + std::string(kindName(kind_)) + " plugin loaded";
    return result;
  }
  if (kindOf<Interface>() != kind_) {
    result.error = "interface does not match the " + std::string(kindName(kind_)) + " slot";
    return result;
  }
  VersionRecord& record = *active->record;
  auto& plugin = static_cast<Interface&>(active->plugin());
  auto started = std::chrono::steady_clock::now();
  try {
    if constexpr (std::is_void_v<R>) {
      f(plugin);
      result.value.emplace();
    } else {
      result.value.emplace(f(plugin));
    }
  } catch (const std::exception& e) {
    result.error = e.what();  // copied out before the exception object dies
  } catch (...) {
    result.error = "non-standard exception";
  }
  auto elapsed = std::chrono::steady_clock::now() - started;
  record.calls.fetch_add(1, std::memory_order_relaxed);
  record.latencyNs.record(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
  if (!result.ok()) {
    if (result.error.empty()) result.error = "plugin threw an exception with no message";
    result.error = std::string(kindName(kind_)) + " " + record.version + ": " + result.error;
    noteError(record);
  }
  return result;
}

}  // namespace switchboard::plugin
