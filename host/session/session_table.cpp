#include "session/session_table.h"

#include <algorithm>
#include <chrono>

namespace switchboard::session {

SessionTable::SessionTable() {
  using namespace std::chrono;
  lastSessionId_ = static_cast<std::uint64_t>(
      duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}

std::optional<SessionRef> SessionTable::attach(SessionRef ref) {
  std::lock_guard lock(mutex_);
  // The key is copied from ref.phone before ref is moved into the entry; an existing entry
  // leaves ref untouched.
  auto [it, inserted] = byPhone_.try_emplace(ref.phone, std::move(ref));
  if (inserted) return std::nullopt;
  SessionRef replaced = std::move(it->second);
  it->second = std::move(ref);
  return replaced;
}

bool SessionTable::detach(const std::string& phone, std::uint64_t sessionId) {
  std::lock_guard lock(mutex_);
  auto it = byPhone_.find(phone);
  if (it == byPhone_.end() || it->second.sessionId != sessionId) return false;
  byPhone_.erase(it);
  return true;
}

std::optional<SessionRef> SessionTable::find(const std::string& phone) const {
  std::lock_guard lock(mutex_);
  auto it = byPhone_.find(phone);
  if (it == byPhone_.end()) return std::nullopt;
  return it->second;
}

bool SessionTable::isOnline(const std::string& phone) const {
  std::lock_guard lock(mutex_);
  return byPhone_.contains(phone);
}

std::optional<SessionAddress> SessionTable::locate(const std::string& phone) const {
  std::lock_guard lock(mutex_);
  auto it = byPhone_.find(phone);
  if (it == byPhone_.end()) return std::nullopt;
  return SessionAddress{it->second.threadIndex, it->second.session};
}

std::size_t SessionTable::size() const {
  std::lock_guard lock(mutex_);
  return byPhone_.size();
}

std::vector<SessionRef> SessionTable::all() const {
  std::lock_guard lock(mutex_);
  std::vector<SessionRef> refs;
  refs.reserve(byPhone_.size());
  for (const auto& [phone, ref] : byPhone_) refs.push_back(ref);
  std::sort(refs.begin(), refs.end(),
            [](const SessionRef& a, const SessionRef& b) { return a.phone < b.phone; });
  return refs;
}

std::vector<SessionRef> SessionTable::longestQueues(std::size_t limit) const {
  std::vector<SessionRef> refs = all();
  auto length = [](const SessionRef& ref) {
    return ref.gauges ? ref.gauges->queueLength.load() : 0;
  };
  std::size_t n = std::min(limit, refs.size());
  std::partial_sort(
      refs.begin(), refs.begin() + static_cast<std::ptrdiff_t>(n), refs.end(),
      [&](const SessionRef& a, const SessionRef& b) { return length(a) > length(b); });
  refs.resize(n);
  return refs;
}

}  // namespace switchboard::session
