#include "plugin/plugin_host_services.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace switchboard::plugin {

// ---------------------------------------------------------------- counters

void CounterRegistry::add(std::string_view kind, std::string_view version, std::string_view name,
                          std::uint64_t delta) {
  std::lock_guard lock(mutex_);
  auto key = std::make_tuple(std::string(kind), std::string(version), std::string(name));
  counters_[std::move(key)] += delta;
}

std::vector<CounterSample> CounterRegistry::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<CounterSample> out;
  out.reserve(counters_.size());
  for (const auto& [key, value] : counters_) {
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), value});
  }
  return out;
}

std::uint64_t CounterRegistry::value(std::string_view kind, std::string_view version,
                                     std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto found =
      counters_.find(std::make_tuple(std::string(kind), std::string(version), std::string(name)));
  return found == counters_.end() ? 0 : found->second;
}

// ---------------------------------------------------------------- services

PluginHostServices::PluginHostServices(std::shared_ptr<spdlog::logger> logger)
    : logger_(std::move(logger)), counters_(std::make_shared<CounterRegistry>()) {}

PluginHostServices::PluginHostServices(std::shared_ptr<spdlog::logger> logger,
                                       std::shared_ptr<CounterRegistry> counters, std::string kind,
                                       std::string version)
    : logger_(std::move(logger)),
      counters_(std::move(counters)),
      kind_(std::move(kind)),
      version_(std::move(version)) {}

std::unique_ptr<PluginHostServices> PluginHostServices::forVersion(Kind kind,
                                                                   std::string_view version) const {
  return std::unique_ptr<PluginHostServices>(new PluginHostServices(
      logger_, counters_, std::string(kindName(kind)), std::string(version)));
}

void PluginHostServices::log(LogLevel level, std::string_view message) {
  spdlog::level::level_enum spdLevel = spdlog::level::info;
  switch (level) {
    case LogLevel::debug:
      spdLevel = spdlog::level::debug;
      break;
    case LogLevel::info:
      spdLevel = spdlog::level::info;
      break;
    case LogLevel::warn:
      spdLevel = spdlog::level::warn;
      break;
    case LogLevel::error:
      spdLevel = spdlog::level::err;
      break;
  }
  try {
    auto* logger = logger_ ? logger_.get() : spdlog::default_logger_raw();
    logger->log(spdLevel, "[{} {}] {}", kind_, version_, message);
  } catch (...) {
    // The host never throws into a plugin.
  }
}

void PluginHostServices::count(std::string_view name, std::uint64_t delta) {
  try {
    counters_->add(kind_, version_, name, delta);
  } catch (...) {
  }
}

std::int64_t PluginHostServices::nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace switchboard::plugin
