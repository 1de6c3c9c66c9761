// What the policy tests load plugins with: a HostServices the test controls
// (logs in a vector, counters in a map, a clock set by hand) and a plugin
// instance made from a dlopened library exactly as the host does it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "switchboard/plugin_api.h"

namespace switchboard::plugins::testing {

// The test's side of the ABI. Thread-safe like the real host; outlives every
// plugin instance made with it (tests declare it first).
class TestHost final : public plugin::HostServices {
 public:
  void log(plugin::LogLevel level, std::string_view message) override {
    std::lock_guard lock(mutex_);
    logs_.emplace_back(level, std::string(message));
  }
  void count(std::string_view name, std::uint64_t delta) override {
    std::lock_guard lock(mutex_);
    counters_[std::string(name)] += delta;
  }
  std::int64_t nowMs() override {
    std::lock_guard lock(mutex_);
    return nowMs_;
  }

  void setNowMs(std::int64_t ms) {
    std::lock_guard lock(mutex_);
    nowMs_ = ms;
  }
  void advanceSeconds(std::int64_t seconds) {
    std::lock_guard lock(mutex_);
    nowMs_ += seconds * 1000;
  }
  std::uint64_t counter(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto found = counters_.find(name);
    return found == counters_.end() ? 0 : found->second;
  }
  std::vector<std::pair<plugin::LogLevel, std::string>> logs() {
    std::lock_guard lock(mutex_);
    return logs_;
  }

 private:
  std::mutex mutex_;
  std::int64_t nowMs_ = 1'700'000'000'000;
  std::map<std::string, std::uint64_t> counters_;
  std::vector<std::pair<plugin::LogLevel, std::string>> logs_;
};

// One mapped plugin library and its descriptor. Instances made from it must be
// destroyed before it (Instance holds a shared_ptr to it for that reason).
class PluginLibrary {
 public:
  explicit PluginLibrary(const std::filesystem::path& path)
      : library_(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local),
        descriptor_(library_.get_alias<const plugin::Descriptor*()>(plugin::kDescriptorSymbol)()) {}

  const plugin::Descriptor& descriptor() const { return *descriptor_; }

 private:
  boost::dll::shared_library library_;
  const plugin::Descriptor* descriptor_;
};

// Frees an instance with the destroy of the library that made it, and holds
// that library mapped until then (the deleter outlives the call it makes).
struct InstanceDeleter {
  std::shared_ptr<PluginLibrary> library;
  void operator()(plugin::Plugin* instance) const { library->descriptor().destroy(instance); }
};
template <typename Interface>
using PluginPtr = std::unique_ptr<Interface, InstanceDeleter>;

// Loads `path`, checks ABI and kind, and makes a configured, started instance
// of `Interface` (the host checks the kind before the same static_cast).
template <typename Interface>
PluginPtr<Interface> loadPlugin(const char* path, plugin::Kind kind, plugin::HostServices& host,
                                const std::vector<plugin::Plugin::Setting>& settings = {}) {
  auto library = std::make_shared<PluginLibrary>(path);
  if (library->descriptor().abiVersion != plugin::kAbiVersion)
    throw std::runtime_error("wrong ABI version");
  if (library->descriptor().kind != kind) throw std::runtime_error("wrong plugin kind");
  plugin::Plugin* made = library->descriptor().create(host);
  if (made == nullptr) throw std::runtime_error("create returned null");
  PluginPtr<Interface> instance(static_cast<Interface*>(made), InstanceDeleter{library});
  const std::string refused = instance->configure(settings);
  if (!refused.empty()) throw std::runtime_error("configure refused: " + refused);
  instance->start();
  return instance;
}

// The version string of the library an instance came from.
template <typename Interface>
std::string versionOf(const PluginPtr<Interface>& instance) {
  return instance.get_deleter().library->descriptor().version;
}

}  // namespace switchboard::plugins::testing
