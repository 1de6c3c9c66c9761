#include "plugin/plugin_host_services.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>

namespace switchboard::plugin {

// ---------------------------------------------------------------- counters

CounterRegistry::Cell& CounterRegistry::cell(std::string_view kind, std::string_view version,
                                             std::string_view name) {
  std::lock_guard lock(mutex_);
  auto key = std::make_tuple(std::string(kind), std::string(version), std::string(name));
  return counters_.try_emplace(std::move(key)).first->second;
}

void CounterRegistry::add(std::string_view kind, std::string_view version, std::string_view name,
                          std::uint64_t delta) {
  cell(kind, version, name).fetch_add(delta, std::memory_order_relaxed);
}

std::vector<CounterSample> CounterRegistry::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<CounterSample> out;
  out.reserve(counters_.size());
  for (const auto& [key, value] : counters_) {
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key),
                   value.load(std::memory_order_relaxed)});
  }
  return out;
}

std::uint64_t CounterRegistry::value(std::string_view kind, std::string_view version,
                                     std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto found =
      counters_.find(std::make_tuple(std::string(kind), std::string(version), std::string(name)));
  return found == counters_.end() ? 0 : found->second.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------- cells by name

namespace {

// Where a name's probe starts: a mix of its length and its first and last
// eight bytes, which tells apart the short names counters have in a few
// instructions (std::hash reads every byte). Names alike there only probe
// further: find() compares whole names.
std::size_t nameHash(std::string_view name) {
  std::uint64_t head = 0;
  std::uint64_t tail = 0;
  if (name.size() >= sizeof head) {
    std::memcpy(&head, name.data(), sizeof head);
    std::memcpy(&tail, name.data() + name.size() - sizeof tail, sizeof tail);
  } else {
    for (unsigned char c : name) head = (head << 8) | c;
  }
  std::uint64_t mixed =
      ((head * 0x9E3779B97F4A7C15ULL) ^ (tail + name.size())) * 0xC2B2AE3D27D4EB4FULL;
  return static_cast<std::size_t>(mixed >> 32);  // the multiplies' best-mixed bits
}

}  // namespace

CounterCells::CounterCells(CounterRegistry& registry, std::string kind, std::string version)
    : registry_(registry), kind_(std::move(kind)), version_(std::move(version)) {
  static_assert((kSlots & (kSlots - 1)) == 0 && kCachedNames < kSlots);
}

void CounterCells::add(std::string_view name, std::uint64_t delta) {
  const std::size_t hash = nameHash(name);
  CounterRegistry::Cell* cell = find(hash, name);
  if (cell == nullptr) cell = &resolve(hash, name);
  cell->fetch_add(delta, std::memory_order_relaxed);
}

CounterRegistry::Cell* CounterCells::find(std::size_t hash, std::string_view name) const {
  // Fewer entries than slots: every probe ends at a null.
  for (std::size_t slot = hash & (kSlots - 1);; slot = (slot + 1) & (kSlots - 1)) {
    const Entry* entry = slots_[slot].load(std::memory_order_acquire);
    if (entry == nullptr) return nullptr;
    if (entry->hash == hash && entry->name == name) return entry->cell;
  }
}

CounterRegistry::Cell& CounterCells::resolve(std::size_t hash, std::string_view name) {
  std::lock_guard lock(mutex_);
  // Another thread may have cached it since this one looked.
  if (CounterRegistry::Cell* cached = find(hash, name)) return *cached;
  CounterRegistry::Cell& cell = registry_.cell(kind_, version_, name);
  if (entries_.size() == kCachedNames) return cell;
  entries_.push_back(std::make_unique<Entry>(Entry{hash, std::string(name), &cell}));
  std::size_t slot = hash & (kSlots - 1);
  while (slots_[slot].load(std::memory_order_relaxed) != nullptr) slot = (slot + 1) & (kSlots - 1);
  slots_[slot].store(entries_.back().get(), std::memory_order_release);
  return cell;
}

// ---------------------------------------------------------------- services

PluginHostServices::PluginHostServices(std::shared_ptr<spdlog::logger> logger)
    : logger_(std::move(logger)),
      counters_(std::make_shared<CounterRegistry>()),
      cells_(*counters_, kind_, version_) {}

PluginHostServices::PluginHostServices(std::shared_ptr<spdlog::logger> logger,
                                       std::shared_ptr<CounterRegistry> counters, std::string kind,
                                       std::string version)
    : logger_(std::move(logger)),
      counters_(std::move(counters)),
      kind_(std::move(kind)),
      version_(std::move(version)),
      cells_(*counters_, kind_, version_) {}

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
    cells_.add(name, delta);
  } catch (...) {
  }
}

std::int64_t PluginHostServices::nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace switchboard::plugin
