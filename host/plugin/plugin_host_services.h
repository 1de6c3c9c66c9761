// The HostServices the host hands to plugins: spdlog logging tagged with the
// plugin's kind and version, counters in a registry the host reads, wall time.
#pragma once

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

// Counters plugins bump, keyed by (kind, version, name). add() is called on
// network threads: it takes a short mutex and never blocks otherwise.
// Thread-safe; shared by the root services and every tagged copy.
class CounterRegistry {
 public:
  void add(std::string_view kind, std::string_view version, std::string_view name,
           std::uint64_t delta);
  std::vector<CounterSample> snapshot() const;
  std::uint64_t value(std::string_view kind, std::string_view version, std::string_view name) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, std::uint64_t, std::less<>> counters_;
};

// The host's HostServices. The root one (made by the host) is tagged "host";
// the plugin manager asks it for a copy tagged with each instance's kind and
// version (forVersion), so a log line and a counter say which version made
// them. Every copy shares one CounterRegistry. Thread-safe; a copy must not
// outlive the root's registry (the manager destroys instances first).
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
};

}  // namespace switchboard::plugin
