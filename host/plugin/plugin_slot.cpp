#include "plugin/plugin_slot.h"

#include <algorithm>

namespace switchboard::plugin {

namespace {

constexpr std::size_t kRecentPauses = 64;

std::int64_t steadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string describe(const char* step, const std::exception* e) {
  return std::string(step) + ": " + (e ? e->what() : "non-standard exception");
}

}  // namespace

PluginSlot::PluginSlot(Kind kind, std::size_t keepVersions)
    : kind_(kind), keepVersions_(std::max<std::size_t>(keepVersions, 2)) {}

PluginSlot::~PluginSlot() {
  // Stop the serving instance; the caller (the manager) guarantees no call is
  // in flight any more.
  serving_.store(nullptr, std::memory_order_release);
  if (active_) {
    try {
      active_->plugin().stop();
    } catch (...) {
    }
  }
}

SwapResult PluginSlot::swap(std::unique_ptr<ActiveVersion> next) {
  SwapResult result;
  ActiveVersion* old = active_.get();
  const std::string oldVersion = old ? old->record->version : "";

  auto closedAt = std::chrono::steady_clock::now();
  gate_.close();
  auto quiescedAt = std::chrono::steady_clock::now();
  // From here to open(): no call runs. Every step is a call into plugin code
  // and any of them may throw.
  std::string bytes;
  const char* step = "exportState";
  try {
    if (old != nullptr) {
      bytes = old->plugin().exportState();
      step = "importState";
      next->plugin().importState(oldVersion, bytes);
    }
    step = "start";
    next->plugin().start();
    result.ok = true;
  } catch (const std::exception& e) {
    result.error = describe(step, &e);
  } catch (...) {
    result.error = describe(step, nullptr);
  }
  if (result.ok) serving_.store(next.get(), std::memory_order_release);
  gate_.open();
  result.quiesceUs = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(quiescedAt - closedAt).count());
  result.pauseUs = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                  std::chrono::steady_clock::now() - closedAt)
                                                  .count());

  std::unique_ptr<ActiveVersion> retired;
  {
    std::lock_guard lock(mutex_);
    pausesUs_.record(result.pauseUs);
    recentPausesUs_.push_back(result.pauseUs);
    if (recentPausesUs_.size() > kRecentPauses) recentPausesUs_.pop_front();
    if (result.ok) {
      // A fresh instance of the same version (new settings) is no rollback target.
      if (old != nullptr && old->record != next->record) previousVersion_ = oldVersion;
      retired = std::move(active_);
      active_ = std::move(next);
      remember(active_->record);
    }
  }
  if (!result.ok) {
    // Never published: no call can be inside it. If start() ran half way,
    // stop() gives it the chance to release what it took.
    try {
      next->plugin().stop();
    } catch (...) {
    }
    next.reset();
    return result;
  }
  if (retired) {
    try {
      retired->plugin().stop();
    } catch (...) {
      // The old version is gone from service either way.
    }
  }
  return result;
}

void PluginSlot::remember(const std::shared_ptr<VersionRecord>& record) {
  history_.erase(std::remove(history_.begin(), history_.end(), record), history_.end());
  history_.push_front(record);
  while (history_.size() > keepVersions_) history_.pop_back();
}

std::shared_ptr<VersionRecord> PluginSlot::findVersion(const std::string& version) const {
  std::lock_guard lock(mutex_);
  for (const auto& record : history_) {
    if (record->version == version) return record;
  }
  return nullptr;
}

std::shared_ptr<VersionRecord> PluginSlot::currentRecord() const {
  std::lock_guard lock(mutex_);
  return active_ ? active_->record : nullptr;
}

std::optional<std::string> PluginSlot::previousVersion() const {
  std::lock_guard lock(mutex_);
  return previousVersion_;
}

void PluginSlot::setBreachHandler(std::function<void(std::string)> onBreach) {
  onBreach_ = std::move(onBreach);
}

void PluginSlot::beginProbation(const std::shared_ptr<VersionRecord>& record,
                                std::chrono::milliseconds window, std::uint64_t threshold) {
  {
    std::lock_guard lock(mutex_);
    probationOwned_ = record;
  }
  probationBaseline_.store(record->errors.load(std::memory_order_relaxed),
                           std::memory_order_relaxed);
  probationThreshold_.store(threshold, std::memory_order_relaxed);
  probationDeadlineNs_.store(
      steadyNowNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(window).count(),
      std::memory_order_relaxed);
  breachReported_.store(false, std::memory_order_relaxed);
  probation_.store(record.get(), std::memory_order_release);
}

void PluginSlot::endProbation() {
  probation_.store(nullptr, std::memory_order_release);
  std::lock_guard lock(mutex_);
  probationOwned_.reset();
}

std::shared_ptr<VersionRecord> PluginSlot::probationRecord() const {
  if (probation_.load(std::memory_order_acquire) == nullptr) return nullptr;
  if (steadyNowNs() >= probationDeadlineNs_.load(std::memory_order_relaxed)) return nullptr;
  std::lock_guard lock(mutex_);
  return probationOwned_;
}

void PluginSlot::noteError(VersionRecord& record) {
  std::uint64_t errors = record.errors.fetch_add(1, std::memory_order_relaxed) + 1;
  if (probation_.load(std::memory_order_acquire) != &record) return;
  if (steadyNowNs() >= probationDeadlineNs_.load(std::memory_order_relaxed)) return;
  std::uint64_t since = errors - probationBaseline_.load(std::memory_order_relaxed);
  if (since <= probationThreshold_.load(std::memory_order_relaxed)) return;
  if (breachReported_.exchange(true, std::memory_order_acq_rel)) return;
  if (onBreach_) onBreach_(record.version);
}

KindStatus PluginSlot::snapshot() const {
  KindStatus snap;
  snap.kind = kind_;
  auto probation = probationRecord();
  std::lock_guard lock(mutex_);
  if (active_) {
    snap.currentVersion = active_->record->version;
    snap.currentBuildId = active_->record->buildId;
    snap.currentSha256 = active_->record->sha256;
    snap.state = "serving";
  }
  snap.previousVersion = previousVersion_;
  if (probation && active_ && probation == active_->record) {
    snap.inProbation = true;
    snap.state = "probation";
    snap.probationRemainingMs =
        std::max<std::int64_t>(0, (probationDeadlineNs_.load() - steadyNowNs()) / 1000000);
  }
  for (const auto& record : history_) {
    VersionSnapshot v;
    v.version = record->version;
    v.buildId = record->buildId;
    v.sha256 = record->sha256;
    v.path = record->path;
    v.current = active_ && active_->record == record;
    v.calls = record->calls.load(std::memory_order_relaxed);
    v.errors = record->errors.load(std::memory_order_relaxed);
    v.p50Ns = record->latencyNs.percentile(0.50);
    v.p99Ns = record->latencyNs.percentile(0.99);
    snap.versions.push_back(std::move(v));
  }
  snap.recentPausesUs.assign(recentPausesUs_.begin(), recentPausesUs_.end());
  snap.pauseP50Us = pausesUs_.percentile(0.50);
  snap.pauseP99Us = pausesUs_.percentile(0.99);
  snap.pauseMaxUs = pausesUs_.max();
  snap.swaps = pausesUs_.count();
  return snap;
}

}  // namespace switchboard::plugin
