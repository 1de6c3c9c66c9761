// The offline plugin: what happens to a message queued for an absent phone.
//
// Policy: the message expires ttl-seconds after it was queued. A push
// notification goes out when it is the first message waiting for that
// recipient, or when the last push to that recipient was more than
// push-interval-seconds ago (0: every message pushes), so a burst of messages
// to a sleeping phone makes one push, not one per message. The text names the
// sender for a single waiting message ("New message from +1555...") and the
// count otherwise ("3 new messages").
//
// Settings: ttl-seconds (2592000 = 30 days), push-interval-seconds (60).
// State: the last push time per recipient; a time older than the interval
// changes no decision and is pruned. Format 1 (1.0.x), fixed width:
// (recipient, time) pairs. Format 2 (1.1.x), compact: (time, recipient) pairs.
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "scratch_host.h"
#include "setting_values.h"
#include "state_codec.h"
#include "switchboard/plugin_sdk.h"

namespace switchboard::plugins::offline {
namespace {

using plugin::HostServices;
using plugin::LogLevel;
using plugin::OfflinePlugin;

constexpr char kStateLetter = 'O';
constexpr std::int64_t kSweepIntervalMs = 60'000;

struct OfflineSettings {
  std::uint64_t ttlSeconds = 30 * 86400;
  std::uint64_t pushIntervalSeconds = 60;
};

// Decides expiry and push for queued messages. Owned by the host (descriptor
// create/destroy). onQueued() is called concurrently from the network
// threads; settings and push times are guarded by mutex_. No call throws
// except importState, which refuses malformed state (ABI contract).
class OfflinePolicy final : public OfflinePlugin {
 public:
  explicit OfflinePolicy(HostServices& host) : host_(host) {}

  std::string configure(const std::vector<Setting>& settings) override {
    try {
      OfflineSettings next = currentSettings();
      for (const auto& setting : settings) {
        std::string error;
        if (setting.key == "ttl-seconds") {
          error = readWholeNumber(setting, 60, 3650ull * 86400, next.ttlSeconds);
        } else if (setting.key == "push-interval-seconds") {
          error = readWholeNumber(setting, 0, 86400, next.pushIntervalSeconds);
        } else {
          error = unknownSetting("offline", setting, {"ttl-seconds", "push-interval-seconds"});
        }
        if (!error.empty()) return error;
      }
      std::lock_guard lock(mutex_);
      settings_ = next;
      return {};
    } catch (const std::exception& error) {
      return std::string("offline settings could not be read: ") + error.what();
    }
  }

  void start() override {
    host_.log(LogLevel::info, "offline " SWITCHBOARD_PLUGIN_VERSION " started");
  }

  QueuePolicy onQueued(std::string_view recipient, std::string_view sender,
                       std::uint64_t queuedForRecipient) override {
    QueuePolicy policy;
    try {
      const std::int64_t now = host_.nowMs();
      {
        std::lock_guard lock(mutex_);
        sweepIfDue(now);
        policy.expiresAtMs = now + static_cast<std::int64_t>(settings_.ttlSeconds) * 1000;
        auto last = lastPushMs_.find(recipient);
        policy.push = queuedForRecipient <= 1 || last == lastPushMs_.end() ||
                      settings_.pushIntervalSeconds == 0 || now - last->second > intervalMs();
        if (policy.push) {
          if (last == lastPushMs_.end()) {
            lastPushMs_.emplace(std::string(recipient), now);
          } else {
            last->second = now;
          }
        }
      }
      if (policy.push) {
        policy.pushText = queuedForRecipient <= 1
                              ? "New message from " + std::string(sender)
                              : std::to_string(queuedForRecipient) + " new messages";
      }
      host_.count(policy.push ? "offline_push" : "offline_push_throttled", 1);
      return policy;
    } catch (...) {
      // Only allocation can fail: keep the message for the default ttl, skip the push.
      QueuePolicy fallback;
      fallback.expiresAtMs =
          host_.nowMs() + static_cast<std::int64_t>(OfflineSettings{}.ttlSeconds) * 1000;
      return fallback;
    }
  }

  std::string exportState() override {
    std::lock_guard lock(mutex_);
    sweep(host_.nowMs());
    StateWriter writer(kStateLetter, kOwnStateFormat);
    writer.u64(lastPushMs_.size());
    for (const auto& [recipient, pushedAtMs] : lastPushMs_) {
      if (kOwnStateFormat == StateFormat::fixedWidth) {
        writer.text(recipient);
        writer.i64(pushedAtMs);
      } else {
        writer.i64(pushedAtMs);
        writer.text(recipient);
      }
    }
    return std::move(writer).finish();
  }

  void importState(std::string_view fromVersion, std::string_view bytes) override {
    const StateFormat format = requireStateFormatOf(fromVersion);
    StateReader reader(bytes, kStateLetter, format);
    std::map<std::string, std::int64_t, std::less<>> lastPushMs;
    for (std::uint64_t n = reader.count(2); n > 0; --n) {
      if (format == StateFormat::fixedWidth) {
        std::string recipient = reader.text();
        lastPushMs.insert_or_assign(std::move(recipient), reader.i64());
      } else {
        const std::int64_t pushedAtMs = reader.i64();
        lastPushMs.insert_or_assign(reader.text(), pushedAtMs);
      }
    }
    reader.expectEnd();
    std::lock_guard lock(mutex_);
    lastPushMs_ = std::move(lastPushMs);
    host_.log(LogLevel::info, "offline imported " + std::to_string(lastPushMs_.size()) +
                                  " push times from " + std::string(fromVersion));
  }

  plugin::SelfTestResult selfTest() override {
    try {
      ScratchHost scratchHost(1'700'000'000'000);
      OfflinePolicy scratch(scratchHost);
      SelfTestLog log;
      const std::string alice = "+15550000001", bob = "+15550000002";
      QueuePolicy first = scratch.onQueued(bob, alice, 1);
      log.check(first.push && first.pushText == "New message from " + alice,
                "the first queued message did not push");
      log.check(first.expiresAtMs == 1'700'000'000'000 + 30ll * 86400 * 1000,
                "the default expiry is not 30 days");
      log.check(!scratch.onQueued(bob, alice, 2).push, "a burst was not throttled");
      scratchHost.advanceMs(61'000);
      QueuePolicy later = scratch.onQueued(bob, alice, 3);
      log.check(later.push && later.pushText == "3 new messages",
                "no push after the interval, or the wrong text");
      OfflinePolicy copy(scratchHost);
      copy.importState(SWITCHBOARD_PLUGIN_VERSION, scratch.exportState());
      log.check(!copy.onQueued(bob, alice, 4).push, "the last push time lost in export/import");
      log.check(!scratch.configure({{"ttl-seconds", "-1"}}).empty(), "a negative ttl accepted");
      log.check(!scratch.configure({{"ttl", "60"}}).empty(), "an unknown setting accepted");
      return log.result("offline self test passed");
    } catch (const std::exception& error) {
      return {false, std::string("offline self test threw: ") + error.what()};
    }
  }

 private:
  OfflineSettings currentSettings() {
    std::lock_guard lock(mutex_);
    return settings_;
  }

  std::int64_t intervalMs() const {
    return static_cast<std::int64_t>(settings_.pushIntervalSeconds) * 1000;
  }

  void sweepIfDue(std::int64_t now) {
    if (now - lastSweepMs_ >= kSweepIntervalMs || now < lastSweepMs_) sweep(now);
  }

  // A recipient whose last push is older than the interval would push anyway.
  void sweep(std::int64_t now) {
    lastSweepMs_ = now;
    std::erase_if(lastPushMs_,
                  [&](const auto& entry) { return now - entry.second > intervalMs(); });
  }

  HostServices& host_;
  std::mutex mutex_;
  OfflineSettings settings_;
  std::map<std::string, std::int64_t, std::less<>> lastPushMs_;
  std::int64_t lastSweepMs_ = 0;
};

}  // namespace
}  // namespace switchboard::plugins::offline

SWITCHBOARD_PLUGIN_CLASS(switchboard::plugins::offline::OfflinePolicy, offline)
