// The HostServices the host hands to plugins: spdlog logging tagged with the
// plugin's kind and version, counters in a registry the host reads, wall time.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "switchboard/plugin_api.h"

namespace spdlog {
class logger;
}

namespace switchboard::plugin {

struct CounterSample {
  std::string kind;
  std::string version;
  std::string name;
  std::uint64_t value = 0;
};

// Counters plugins bump, keyed by (kind, version, name). Thread-safe; shared by
// the root services and every tagged copy.
//
// Each counter is a cell (an atomic) made on first use and kept, at the same
// address, for the registry's whole life: cell() resolves a key under a short
// mutex, and whoever holds the reference then adds to it with one atomic add
// and no lock (PluginHostServices caches its cells by name). Counters are
// never removed, and a cell made by cell() is listed by snapshot() even before
// anything is added to it (value 0), as add() with a delta of 0 would.
class CounterRegistry {
 public:
  using Cell = std::atomic<std::uint64_t>;

  // The counter (kind, version, name), made at 0 if new. The reference stays
  // valid as long as the registry lives.
  Cell& cell(std::string_view kind, std::string_view version, std::string_view name);
  // cell(kind, version, name) += delta.
  void add(std::string_view kind, std::string_view version, std::string_view name,
           std::uint64_t delta);
  // Every counter, ordered by (kind, version, name). Each value is one its
  // counter had during the call: an add racing with the call may or may not be
  // in it, and the values are not one instant's across counters.
  std::vector<CounterSample> snapshot() const;
  // 0 for a counter never made.
  std::uint64_t value(std::string_view kind, std::string_view version, std::string_view name) const;

 private:
  mutable std::mutex mutex_;  // guards the map's shape; the cells are atomics
  // std::map: a node, and so a cell, never moves.
  std::map<std::tuple<std::string, std::string, std::string>, Cell, std::less<>> counters_;
};

// One (kind, version)'s counters by name, resolved once each: what a
// PluginHostServices counts through. add() is safe from any number of threads
// at once; a name seen before costs a short hash, a probe of a fixed table read
// without a lock, and an atomic add. The first add of a name takes the
// registry's mutex once to resolve its cell; past kCachedNames names, further
// names go to the registry every time (still right, just not cached).
class CounterCells {
 public:
  static constexpr std::size_t kCachedNames = 32;

  // `registry` must outlive this.
  CounterCells(CounterRegistry& registry, std::string kind, std::string version);
  CounterCells(const CounterCells&) = delete;
  CounterCells& operator=(const CounterCells&) = delete;

  // The counter (kind, version, name) += delta.
  void add(std::string_view name, std::uint64_t delta);

 private:
  // Immutable once published in a slot; owned by entries_.
  struct Entry {
    std::size_t hash;
    std::string name;
    CounterRegistry::Cell* cell;
  };
  static constexpr std::size_t kSlots = 2 * kCachedNames;  // a power of two: a probe meets a null

  CounterRegistry::Cell* find(std::size_t hash, std::string_view name) const;
  CounterRegistry::Cell& resolve(std::size_t hash, std::string_view name);

  CounterRegistry& registry_;
  const std::string kind_;
  const std::string version_;
  // Open addressing, linear probing; a slot goes from null to an entry once,
  // under mutex_ (release), and is read without a lock (acquire).
  std::array<std::atomic<const Entry*>, kSlots> slots_{};
  std::mutex mutex_;                             // serialises resolve()
  std::vector<std::unique_ptr<Entry>> entries_;  // under mutex_; at most kCachedNames
};

// The host's HostServices. The root one (made by the host) is tagged "host";
// the plugin manager asks it for a copy tagged with each instance's kind and
// version (forVersion), so a log line and a counter say which version made
// them. Every copy shares one CounterRegistry, and each keeps its own
// CounterCells, so two copies of one (kind, version) count into the same
// counters. Thread-safe; a copy must not outlive the root's registry (the
// manager destroys instances first).
class PluginHostServices : public HostServices {
 public:
  // `logger` may be null: spdlog's default logger is used.
  explicit PluginHostServices(std::shared_ptr<spdlog::logger> logger = nullptr);
  virtual ~PluginHostServices() = default;

  void log(LogLevel level, std::string_view message) override;
  void count(std::string_view name, std::uint64_t delta) override;
  std::int64_t nowMs() override;

  std::unique_ptr<PluginHostServices> forVersion(Kind kind, std::string_view version) const;

  CounterRegistry& counters() const { return *counters_; }

 private:
  PluginHostServices(std::shared_ptr<spdlog::logger> logger,
                     std::shared_ptr<CounterRegistry> counters, std::string kind,
                     std::string version);

  std::shared_ptr<spdlog::logger> logger_;
  std::shared_ptr<CounterRegistry> counters_;
  std::string kind_ = "host";
  std::string version_;
  CounterCells cells_;  // this copy's (kind_, version_) counters in *counters_
};

}  // namespace switchboard::plugin
