// The presence plugin: whether a watcher may see a user's online state, last
// seen time and typing.
//
// Policy: a user always sees their own presence. Otherwise, with
// require-mutual-contacts (the default) both must have each other as
// contacts; without it, it is enough that the user has the watcher as a
// contact (the user chose to share with the people in their address book).
//
// Settings: require-mutual-contacts (true).
// State: how many decisions were visible and hidden. Format 1 (1.0.x): visible
// then hidden, fixed-width u64. Format 2 (1.1.x): hidden then visible, compact.
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>

#include "scratch_host.h"
#include "setting_values.h"
#include "state_codec.h"
#include "switchboard/plugin_sdk.h"

namespace switchboard::plugins::presence {
namespace {

using plugin::HostServices;
using plugin::LogLevel;
using plugin::PresencePlugin;

constexpr char kStateLetter = 'P';

// Decides presence visibility and counts the decisions. Owned by the host
// (descriptor create/destroy). visible() is called concurrently from the
// network threads; the setting and counters are guarded by mutex_. No call
// throws except importState, which refuses malformed state (ABI contract).
class PresencePolicy final : public PresencePlugin {
 public:
  explicit PresencePolicy(HostServices& host) : host_(host) {}

  std::string configure(const std::vector<Setting>& settings) override {
    try {
      bool requireMutual = requireMutualContacts();
      for (const auto& setting : settings) {
        std::string error = setting.key == "require-mutual-contacts"
                                ? readFlag(setting, requireMutual)
                                : unknownSetting("presence", setting, {"require-mutual-contacts"});
        if (!error.empty()) return error;
      }
      std::lock_guard lock(mutex_);
      requireMutualContacts_ = requireMutual;
      return {};
    } catch (const std::exception& error) {
      return std::string("presence settings could not be read: ") + error.what();
    }
  }

  void start() override {
    host_.log(LogLevel::info, "presence " SWITCHBOARD_PLUGIN_VERSION " started");
  }

  bool visible(std::string_view user, std::string_view watcher, bool watcherHasUserAsContact,
               bool userHasWatcherAsContact) override {
    bool shown = false;
    {
      std::lock_guard lock(mutex_);
      shown = user == watcher ||
              (userHasWatcherAsContact && (watcherHasUserAsContact || !requireMutualContacts_));
      ++(shown ? visibleCount_ : hiddenCount_);
    }
    host_.count(shown ? "presence_visible" : "presence_hidden", 1);
    return shown;
  }

  std::string exportState() override {
    std::lock_guard lock(mutex_);
    StateWriter writer(kStateLetter, kOwnStateFormat);
    if (kOwnStateFormat == StateFormat::fixedWidth) {
      writer.u64(visibleCount_);
      writer.u64(hiddenCount_);
    } else {
      writer.u64(hiddenCount_);
      writer.u64(visibleCount_);
    }
    return std::move(writer).finish();
  }

  void importState(std::string_view fromVersion, std::string_view bytes) override {
    const StateFormat format = requireStateFormatOf(fromVersion);
    StateReader reader(bytes, kStateLetter, format);
    const std::uint64_t first = reader.u64();
    const std::uint64_t second = reader.u64();
    reader.expectEnd();
    std::lock_guard lock(mutex_);
    visibleCount_ = format == StateFormat::fixedWidth ? first : second;
    hiddenCount_ = format == StateFormat::fixedWidth ? second : first;
  }

  plugin::SelfTestResult selfTest() override {
    try {
      ScratchHost scratchHost(0);
      PresencePolicy scratch(scratchHost);
      SelfTestLog log;
      log.check(scratch.visible("+15550000001", "+15550000002", true, true),
                "mutual contacts do not see each other");
      log.check(!scratch.visible("+15550000001", "+15550000002", false, true),
                "a one-sided contact sees presence under the mutual rule");
      log.check(!scratch.visible("+15550000001", "+15550000002", true, false),
                "a watcher the user does not know sees presence");
      log.check(scratch.visible("+15550000001", "+15550000001", false, false),
                "a user cannot see their own presence");
      log.check(scratch.configure({{"require-mutual-contacts", "false"}}).empty(),
                "require-mutual-contacts=false refused");
      log.check(scratch.visible("+15550000001", "+15550000002", false, true),
                "the user's contact does not see presence without the mutual rule");
      log.check(!scratch.configure({{"require-mutual-contacts", "maybe"}}).empty(),
                "a bad flag accepted");
      PresencePolicy copy(scratchHost);
      copy.importState(SWITCHBOARD_PLUGIN_VERSION, scratch.exportState());
      log.check(copy.exportState() == scratch.exportState(), "state did not survive export/import");
      log.check(scratchHost.counter("presence_visible") == 3, "visible decisions not counted");
      return log.result("presence self test passed");
    } catch (const std::exception& error) {
      return {false, std::string("presence self test threw: ") + error.what()};
    }
  }

 private:
  bool requireMutualContacts() {
    std::lock_guard lock(mutex_);
    return requireMutualContacts_;
  }

  HostServices& host_;
  std::mutex mutex_;
  bool requireMutualContacts_ = true;
  std::uint64_t visibleCount_ = 0;
  std::uint64_t hiddenCount_ = 0;
};

}  // namespace
}  // namespace switchboard::plugins::presence

SWITCHBOARD_PLUGIN_CLASS(switchboard::plugins::presence::PresencePolicy, presence)
