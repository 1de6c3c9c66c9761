// The HostServices a plugin's selfTest runs a scratch instance against: a
// clock the test moves by hand, logs kept for the failure message, counters
// kept in a map. Lives only for the duration of one selfTest call, on the
// stack of the caller; it must not be handed to anything that outlives it.
// Guarded by a mutex because the HostServices contract says thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "switchboard/plugin_api.h"

namespace switchboard::plugins {

class ScratchHost final : public switchboard::plugin::HostServices {
 public:
  explicit ScratchHost(std::int64_t startMs) : nowMs_(startMs) {}
  ScratchHost(const ScratchHost&) = delete;
  ScratchHost& operator=(const ScratchHost&) = delete;

  void log(switchboard::plugin::LogLevel, std::string_view) override {}
  void count(std::string_view name, std::uint64_t delta) override {
    std::lock_guard lock(mutex_);
    counters_[std::string(name)] += delta;
  }
  std::int64_t nowMs() override {
    std::lock_guard lock(mutex_);
    return nowMs_;
  }

  void advanceMs(std::int64_t ms) {
    std::lock_guard lock(mutex_);
    nowMs_ += ms;
  }
  std::uint64_t counter(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto found = counters_.find(name);
    return found == counters_.end() ? 0 : found->second;
  }

 private:
  std::mutex mutex_;
  std::int64_t nowMs_;
  std::map<std::string, std::uint64_t, std::less<>> counters_;
};

// Collects a selfTest's failed checks into one message for the ledger.
class SelfTestLog {
 public:
  void check(bool passed, std::string_view what) {
    if (passed) return;
    if (!failures_.empty()) failures_ += "; ";
    failures_ += what;
  }
  switchboard::plugin::SelfTestResult result(std::string_view passedMessage) const {
    if (failures_.empty()) return {true, std::string(passedMessage)};
    return {false, "self test failed: " + failures_};
  }

 private:
  std::string failures_;
};

}  // namespace switchboard::plugins
