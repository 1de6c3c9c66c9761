// The plugin manager: loads versions of the four plugin kinds, proves each in
// a canary process first, swaps them in without losing a call, watches a new
// version on probation, rolls back, and writes every step to the ledger.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/canary.h"
#include "plugin/control_thread.h"
#include "plugin/plugin_error.h"
#include "plugin/plugin_ledger.h"
#include "plugin/plugin_slot.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::plugin {

struct PluginManagerOptions {
  std::filesystem::path dataDir = "var";  // libraries go to <dataDir>/plugins/<kind>/
  CanaryOptions canary;
  std::chrono::milliseconds probationWindow{60000};
  std::uint64_t probationErrorThreshold = 10;  // errors of the new version, strictly more
  std::size_t keepVersions = 5;                // per kind, the serving one included
  // Given to every new instance of a kind through configure(), before it
  // imports state or starts; a refusal refuses the version.
  std::map<Kind, std::vector<Plugin::Setting>> settings;
};

// The outcome of load() or rollback(). On !ok nothing changed and `error`
// says why in one line; the same text is the ledger row's reason.
struct OperationResult {
  bool ok = false;
  std::string error;
  std::string fromVersion;
  std::string toVersion;
  std::string sha256;
  std::uint64_t pauseUs = 0;
  std::uint64_t quiesceUs = 0;  // of pauseUs, waiting for calls in flight
};

// Told each step of a load as it starts: ("copy", path), ("abi-check", ...),
// ("canary", ...), ("swap", version), ("probation", window). Called on the
// control thread, so it must only hand the step on (post it), never block.
using LoadProgress = std::function<void(std::string_view step, std::string_view detail)>;

// "routing" -> Kind::routing; nullopt for anything else.
std::optional<Kind> parseKind(std::string_view name);

// Owns one PluginSlot per kind, the ledger writer and one control thread.
// load/rollback may be called from any thread (not from a plugin call): they
// post to the control thread, which runs operations one at a time, and block
// until theirs is done. The canary runs there too, so a slow canary delays
// other operations, never plugin calls. Plugin calls go through slot(kind)
// or call<Interface>() on the caller's thread.
//
// `host` and `store` must outlive the manager. Destroying the manager runs
// the operations already queued, then stops every serving instance; no
// plugin call may be in flight or start by then.
class PluginManager {
 public:
  PluginManager(PluginManagerOptions options, HostServices& host, store::Store& store);
  ~PluginManager();
  PluginManager(const PluginManager&) = delete;
  PluginManager& operator=(const PluginManager&) = delete;

  // Validates, canaries and loads the library at `library` as a version of
  // `kind`, then swaps it in (or just starts it when the slot is empty).
  // A swap puts the new version on probation.
  OperationResult load(Kind kind, const std::filesystem::path& library,
                       const std::string& actor = "operator", const LoadProgress& progress = {});
  // Back to the previous version (nullopt) or to a named version kept loaded.
  OperationResult rollback(Kind kind, const std::optional<std::string>& version = std::nullopt,
                           const std::string& actor = "operator");

  // Settings for `kind` from now on (a config reload): the serving version, if
  // any, is swapped for a fresh instance of itself configured with them (the
  // swap protocol: quiesce, export/import state, start). On a refusal (the
  // plugin's configure, importState or start) nothing changes and the old
  // settings stay. Written to the ledger as "reconfigured" or "rejected".
  // Throws PluginError for a value that is not a kind.
  OperationResult reconfigure(Kind kind, std::vector<Plugin::Setting> settings,
                              const std::string& actor = "reload");

  // The limits a reload may change while running; they apply to the next
  // load, swap or canary (a probation already running keeps its own).
  struct LiveLimits {
    std::chrono::milliseconds probationWindow;
    std::uint64_t probationErrorThreshold;
    std::chrono::milliseconds canaryTimeout;
  };
  void setLimits(const LiveLimits& limits);

  // Throws PluginError for a value that is not a kind.
  PluginSlot& slot(Kind kind);

  template <class Interface, class F>
  auto call(F&& f) {
    return slot(kindOf<Interface>()).template call<Interface>(std::forward<F>(f));
  }

  KindStatus status(Kind kind) const;
  std::vector<KindStatus> status() const;  // the four kinds
  std::vector<LedgerRow> ledger(const std::optional<Kind>& kind = std::nullopt,
                                std::size_t limit = 100) const;

  // Returns once every operation posted before it (an automatic rollback
  // included) has finished.
  void waitIdle();

 private:
  OperationResult doLoad(Kind kind, const std::filesystem::path& library, const std::string& actor,
                         const LoadProgress& progress);
  OperationResult doReconfigure(Kind kind, std::vector<Plugin::Setting> settings,
                                const std::string& actor);
  OperationResult doRollback(Kind kind, const std::optional<std::string>& version,
                             const std::string& actor, const std::string& why);
  void onProbationBreach(Kind kind, const std::string& version);
  std::unique_ptr<ActiveVersion> instantiate(Kind kind, std::shared_ptr<VersionRecord> record);
  OperationResult finish(LedgerRow row, OperationResult result);
  void checkNotControlThread(const char* operation) const;
  static std::size_t indexOf(Kind kind);

  PluginManagerOptions options_;  // changed (reconfigure, setLimits) on the control thread only
  HostServices& host_;
  PluginLedger ledger_;
  std::array<std::unique_ptr<PluginSlot>, 4> slots_;
  ControlThread control_;  // last: stops (running queued work) before the slots go
};

}  // namespace switchboard::plugin
