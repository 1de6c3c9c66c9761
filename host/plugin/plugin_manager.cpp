#include "plugin/plugin_manager.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "plugin/library_abi_check.h"
#include "plugin/plugin_host_services.h"

namespace switchboard::plugin {

namespace {

constexpr std::array<Kind, 4> kKinds{Kind::routing, Kind::auth, Kind::presence, Kind::offline};

std::int64_t wallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool validKind(Kind kind) {
  return kindName(kind) != "unknown";
}

std::string kindText(Kind kind) {
  return validKind(kind) ? std::string(kindName(kind))
                         : "unknown(" + std::to_string(static_cast<std::uint32_t>(kind)) + ")";
}

}  // namespace

std::optional<Kind> parseKind(std::string_view name) {
  for (Kind kind : kKinds) {
    if (kindName(kind) == name) return kind;
  }
  return std::nullopt;
}

PluginManager::PluginManager(PluginManagerOptions options, HostServices& host, store::Store& store)
    : options_(std::move(options)), host_(host), ledger_(store) {
  for (Kind kind : kKinds) {
    auto& slot = slots_[indexOf(kind)];
    slot = std::make_unique<PluginSlot>(kind, options_.keepVersions);
    // Runs on the calling thread of the failing call: only post.
    slot->setBreachHandler([this, kind](std::string version) {
      control_.post([this, kind, version] { onProbationBreach(kind, version); });
    });
  }
}

PluginManager::~PluginManager() = default;

std::size_t PluginManager::indexOf(Kind kind) {
  return static_cast<std::size_t>(kind) - static_cast<std::size_t>(Kind::routing);
}

PluginSlot& PluginManager::slot(Kind kind) {
  if (!validKind(kind)) throw PluginError("unknown plugin kind " + kindText(kind));
  return *slots_[indexOf(kind)];
}

// ---------------------------------------------------------------- operations

void PluginManager::checkNotControlThread(const char* operation) const {
  // A blocking operation posted from the control thread would wait for itself.
  if (control_.onThisThread()) {
    throw PluginError(std::string(operation) + " called on the plugin control thread");
  }
}

OperationResult PluginManager::load(Kind kind, const std::filesystem::path& library,
                                    const std::string& actor, const LoadProgress& progress) {
  checkNotControlThread("load");
  return control_.run([&] { return doLoad(kind, library, actor, progress); });
}

OperationResult PluginManager::rollback(Kind kind, const std::optional<std::string>& version,
                                        const std::string& actor) {
  checkNotControlThread("rollback");
  return control_.run([&] { return doRollback(kind, version, actor, ""); });
}

OperationResult PluginManager::reconfigure(Kind kind, std::vector<Plugin::Setting> settings,
                                           const std::string& actor) {
  checkNotControlThread("reconfigure");
  return control_.run([&] { return doReconfigure(kind, std::move(settings), actor); });
}

void PluginManager::setLimits(const LiveLimits& limits) {
  checkNotControlThread("setLimits");
  control_.run([&] {
    options_.probationWindow = limits.probationWindow;
    options_.probationErrorThreshold = limits.probationErrorThreshold;
    options_.canary.timeout = limits.canaryTimeout;
  });
}

void PluginManager::waitIdle() {
  checkNotControlThread("waitIdle");
  control_.run([] {});
}

OperationResult PluginManager::finish(LedgerRow row, OperationResult result) {
  row.atMs = wallNowMs();
  row.fromVersion = result.fromVersion;
  row.toVersion = result.toVersion;
  row.sha256 = result.sha256;
  row.pauseUs = result.pauseUs;
  if (!result.ok) {
    row.result = kResultRejected;
    row.reason = result.error;
    spdlog::warn("plugin {} {} rejected ({}): {}", row.kind, row.actor, row.toVersion,
                 result.error);
  } else {
    spdlog::info("plugin {} {}: {} -> {} by {} (pause {} us) {}", row.kind, row.result,
                 row.fromVersion.empty() ? "-" : row.fromVersion, row.toVersion, row.actor,
                 row.pauseUs, row.reason);
  }
  try {
    ledger_.append(row);
  } catch (const std::exception& e) {
    // The operation happened; losing its ledger row must not undo or hide it.
    spdlog::error("plugin ledger write failed: {}", e.what());
  }
  return result;
}

std::unique_ptr<ActiveVersion> PluginManager::instantiate(Kind kind,
                                                          std::shared_ptr<VersionRecord> record) {
  auto active = std::make_unique<ActiveVersion>();
  active->record = std::move(record);
  HostServices* services = &host_;
  if (auto* tagging = dynamic_cast<PluginHostServices*>(&host_)) {
    active->ownedServices = tagging->forVersion(kind, active->record->version);
    services = active->ownedServices.get();
  }
  active->instance = std::make_unique<PluginInstance>(active->record->library, *services);
  // Before the swap, outside the pause: the instance is not serving yet.
  auto found = options_.settings.find(kind);
  std::string refusal;
  try {
    refusal = active->plugin().configure(
        found == options_.settings.end() ? std::vector<Plugin::Setting>{} : found->second);
  } catch (const std::exception& e) {
    refusal = std::string("configure threw: ") + e.what();
  } catch (...) {
    refusal = "configure threw a non-standard exception";
  }
  if (!refusal.empty()) {
    throw PluginError("version " + active->record->version + " refused its settings: " + refusal);
  }
  return active;
}

OperationResult PluginManager::doLoad(Kind kind, const std::filesystem::path& library,
                                      const std::string& actor, const LoadProgress& progress) {
  auto step = [&progress](std::string_view name, const std::string& detail) {
    if (progress) progress(name, detail);
  };
  LedgerRow row;
  row.actor = actor;
  row.kind = kindText(kind);
  OperationResult result;
  if (!validKind(kind)) {
    result.error = "unknown plugin kind " + kindText(kind);
    return finish(row, result);
  }
  PluginSlot& target = slot(kind);
  auto current = target.currentRecord();
  if (current) result.fromVersion = current->version;

  try {
    step("copy", library.string());
    auto staged = stageLibrary(library, options_.dataDir / "plugins" / std::string(kindName(kind)));
    result.sha256 = staged.sha256;

    // Nothing from this library runs in this process before the canary passed.
    // abi-check reads the file only; the canary runs it, in a child process.
    step("abi-check", "sha256 " + staged.sha256);
    checkLibraryAbi(staged.path);
    step("canary", staged.path.string());
    auto verdict = runCanaryProcess(options_.canary, kind, staged.path);
    if (!verdict.passed) throw PluginError(verdict.reason);
    result.toVersion = verdict.version;

    std::shared_ptr<VersionRecord> record = target.findVersion(verdict.version);
    if (record && record->sha256 != staged.sha256) {
      throw PluginError("version " + verdict.version +
                        " is already loaded with other bytes (sha256 " + record->sha256 + ")");
    }
    if (record && record == current) {
      throw PluginError("version " + verdict.version + " is already serving");
    }
    if (!record) {
      auto finalPath = finalLibraryPath(staged, verdict.version);
      auto mapped = PluginLibrary::open(finalPath, kind);
      if (mapped->version() != verdict.version) {
        throw PluginError("library reports version " + mapped->version() + " in the host but " +
                          verdict.version + " in the canary");
      }
      record = std::make_shared<VersionRecord>();
      record->library = std::move(mapped);
      record->version = verdict.version;
      record->buildId = record->library->buildId();
      record->sha256 = staged.sha256;
      record->path = finalPath;
    }

    step("swap",
         (result.fromVersion.empty() ? "-" : result.fromVersion) + " -> " + verdict.version);
    auto swap = target.swap(instantiate(kind, record));
    result.pauseUs = swap.pauseUs;
    result.quiesceUs = swap.quiesceUs;
    if (!swap.ok) throw PluginError("swap refused by " + verdict.version + ": " + swap.error);
  } catch (const PluginError& e) {
    result.error = e.what();
    return finish(row, result);
  } catch (const std::exception& e) {
    result.error = std::string("load failed: ") + e.what();
    return finish(row, result);
  }

  result.ok = true;
  if (current) {
    row.result = kResultSwapped;
    target.beginProbation(target.currentRecord(), options_.probationWindow,
                          options_.probationErrorThreshold);
    row.reason = "probation " + std::to_string(options_.probationWindow.count()) + " ms";
    step("probation", row.reason);
  } else {
    row.result = kResultLoaded;
  }
  return finish(row, result);
}

OperationResult PluginManager::doRollback(Kind kind, const std::optional<std::string>& version,
                                          const std::string& actor, const std::string& why) {
  LedgerRow row;
  row.actor = actor;
  row.kind = kindText(kind);
  OperationResult result;
  if (!validKind(kind)) {
    result.error = "unknown plugin kind " + kindText(kind);
    return finish(row, result);
  }
  PluginSlot& target = slot(kind);
  auto current = target.currentRecord();
  if (!current) {
    result.error = "no " + row.kind + " plugin loaded: nothing to roll back";
    return finish(row, result);
  }
  result.fromVersion = current->version;
  std::optional<std::string> wanted = version ? version : target.previousVersion();
  if (!wanted) {
    result.error = "no previous " + row.kind + " version to roll back to";
    return finish(row, result);
  }
  result.toVersion = *wanted;
  if (*wanted == current->version) {
    result.error = "version " + *wanted + " is already serving";
    return finish(row, result);
  }
  auto record = target.findVersion(*wanted);
  if (!record) {
    std::string loaded;
    for (const auto& v : target.snapshot().versions)
      loaded += (loaded.empty() ? "" : ", ") + v.version;
    result.error =
        "version " + *wanted + " of " + row.kind + " is not loaded (loaded: " + loaded + ")";
    return finish(row, result);
  }
  result.sha256 = record->sha256;
  try {
    auto swap = target.swap(instantiate(kind, record));
    result.pauseUs = swap.pauseUs;
    result.quiesceUs = swap.quiesceUs;
    if (!swap.ok) throw PluginError("rollback refused by " + *wanted + ": " + swap.error);
  } catch (const std::exception& e) {
    result.error = e.what();
    return finish(row, result);
  }
  target.endProbation();
  result.ok = true;
  row.result = kResultRolledBack;
  row.reason = why;
  return finish(row, result);
}

OperationResult PluginManager::doReconfigure(Kind kind, std::vector<Plugin::Setting> settings,
                                             const std::string& actor) {
  PluginSlot& target = slot(kind);  // throws PluginError for a value that is not a kind
  LedgerRow row;
  row.actor = actor;
  row.kind = kindText(kind);
  OperationResult result;
  std::vector<Plugin::Setting> previous = std::move(options_.settings[kind]);
  options_.settings[kind] = std::move(settings);
  auto current = target.currentRecord();
  if (!current) {  // nothing serving: the next load is configured with them
    result.ok = true;
    return result;
  }
  result.fromVersion = current->version;
  result.toVersion = current->version;
  result.sha256 = current->sha256;
  try {
    auto swap = target.swap(instantiate(kind, current));
    result.pauseUs = swap.pauseUs;
    result.quiesceUs = swap.quiesceUs;
    if (!swap.ok)
      throw PluginError("new settings refused by " + current->version + ": " + swap.error);
  } catch (const std::exception& e) {
    options_.settings[kind] = std::move(previous);
    result.error = e.what();
    return finish(row, result);
  }
  result.ok = true;
  row.result = kResultReconfigured;
  return finish(row, result);
}

void PluginManager::onProbationBreach(Kind kind, const std::string& version) {
  PluginSlot& target = slot(kind);
  auto watched = target.probationRecord();
  auto current = target.currentRecord();
  // The breach may be stale: an operator may have swapped or rolled back
  // since the failing call posted it.
  if (!watched || !current || watched != current || current->version != version) return;
  std::string why = "probation: " + version + " had more than " +
                    std::to_string(options_.probationErrorThreshold) + " errors within " +
                    std::to_string(options_.probationWindow.count()) + " ms (" +
                    std::to_string(current->errors.load()) + " errors in total)";
  doRollback(kind, std::nullopt, "probation", why);
}

// ---------------------------------------------------------------- status

KindStatus PluginManager::status(Kind kind) const {
  if (!validKind(kind)) throw PluginError("unknown plugin kind " + kindText(kind));
  return slots_[indexOf(kind)]->snapshot();
}

std::vector<KindStatus> PluginManager::status() const {
  std::vector<KindStatus> out;
  for (Kind kind : kKinds) out.push_back(status(kind));
  return out;
}

std::vector<LedgerRow> PluginManager::ledger(const std::optional<Kind>& kind,
                                             std::size_t limit) const {
  std::optional<std::string> name;
  if (kind) name = kindText(*kind);
  return ledger_.rows(name, limit);
}

}  // namespace switchboard::plugin
