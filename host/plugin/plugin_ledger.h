// The plugin ledger: one durable row per load, swap, rollback or rejection.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace switchboard::plugin {

struct LedgerRow {
  std::int64_t id = 0;
  std::int64_t atMs = 0;  // wall clock, ms since the Unix epoch
  std::string actor;      // "operator", "probation", ...
  std::string kind;
  std::string fromVersion;  // empty when there was none
  std::string toVersion;    // empty when unknown (rejected before the canary)
  std::string sha256;
  std::uint64_t pauseUs = 0;
  std::string result;  // see the kResult* constants
  std::string reason;
};

inline constexpr const char* kResultLoaded = "loaded";    // first version of a kind
inline constexpr const char* kResultSwapped = "swapped";  // replaced a serving version
inline constexpr const char* kResultRolledBack = "rolled_back";
// The serving version restarted with new settings (a config reload).
inline constexpr const char* kResultReconfigured = "reconfigured";
inline constexpr const char* kResultRejected = "rejected";  // refused; nothing changed

// Writes rows through the Store (the plugin_ledger table, created if missing)
// and reads them back. append() blocks until the row is durable, so it runs on
// the manager's control thread, never on a network thread. Thread-safe.
class PluginLedger {
 public:
  explicit PluginLedger(store::Store& store);

  void append(const LedgerRow& row);
  // Newest first; `kind` filters when given.
  std::vector<LedgerRow> rows(const std::optional<std::string>& kind, std::size_t limit) const;

 private:
  store::Store& store_;
};

}  // namespace switchboard::plugin
