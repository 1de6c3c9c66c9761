#include "messaging/stream_intake.h"

#include <algorithm>

namespace switchboard::messaging {

// Live before the link last went away: notices may have been lost since, so
// the phone imports again (goLive wants an import of the current epoch).
// Rows other nodes kept for it meanwhile need no wait: each node moves them
// into the stream in the order they were sent, before anything sent to the
// phone later (DeliveryTransport::setHold), so memory takes them in order.
void StreamIntake::forgetStaleLive(Phone& p, std::uint64_t epochNow) {
  if (!p.liveEpoch || *p.liveEpoch == epochNow) return;
  p.liveEpoch.reset();
}

void StreamIntake::loggedIn(const std::string& phone, std::uint64_t sessionId,
                            Clock::time_point liveAt) {
  std::deque<Kept> dropped;  // answered outside the lock
  std::lock_guard lock(mutex_);
  Phone& p = phones_[phone];
  dropped.swap(p.kept);
  bool importing = p.importing;
  p = Phone{};
  p.sessionId = sessionId;
  p.liveAt = liveAt;
  p.importing = importing;
}

void StreamIntake::ended(const std::string& phone, std::uint64_t sessionId) {
  std::deque<Kept> dropped;
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end() || it->second.sessionId != sessionId) return;
  dropped.swap(it->second.kept);
  phones_.erase(it);
}

StreamIntake::Verdict StreamIntake::notice(const cluster::QueuedEnvelope& queued,
                                           const std::string& node, std::uint64_t epoch,
                                           const BatchToken& token) {
  std::deque<Kept> dropped;
  std::lock_guard lock(mutex_);
  auto it = phones_.find(queued.envelope.recipient);
  if (it == phones_.end()) return Verdict::notHere;
  Phone& p = it->second;
  // The node's notice before this one for the phone: seen, or read by an import?
  std::uint64_t& last = p.lastFrom[node];
  std::uint64_t prev = queued.prevServerId;
  bool gapBefore = prev != 0 && last < prev && prev > p.readUpTo && !p.held.contains(prev);
  last = std::max(last, queued.serverId);
  if (queued.serverId <= p.readUpTo || p.held.contains(queued.serverId)) return Verdict::skip;
  if (p.liveEpoch == epoch && !gapBefore) {
    p.held.insert(queued.serverId);
    return Verdict::offer;
  }
  auto now = Clock::now();
  bool wasLive = p.liveEpoch == epoch;
  forgetStaleLive(p, epoch);
  if (wasLive) {
    // Its notice before this one is lost: import (it reads the stream from
    // where imports stopped) before anything more is taken from memory.
    p.liveEpoch.reset();
    p.liveAt = std::max(p.liveAt, now);
  }
  if (p.kept.size() >= kMaxKept) {
    dropped.swap(p.kept);
    p.liveAt = std::max(p.liveAt, now);  // what was dropped is read by a later import
  }
  p.kept.push_back({queued, token, gapBefore});
  if (p.importAsked || (p.importing && p.importMayGoLive)) return Verdict::kept;
  p.importAsked = true;
  return wasLive ? Verdict::gap : Verdict::import;
}

std::optional<std::vector<StreamIntake::Kept>> StreamIntake::goLive(const std::string& phone,
                                                                    Clock::time_point startedAt,
                                                                    std::uint64_t epoch,
                                                                    std::uint64_t epochNow) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return std::nullopt;
  Phone& p = it->second;
  forgetStaleLive(p, epochNow);
  if (p.liveEpoch || p.importing || epoch != epochNow || startedAt < p.liveAt) return std::nullopt;
  // A kept notice whose chain's previous one did not come and that this
  // import did not read (stored after it began): lost, and memory would
  // deliver what follows ahead of it. Import once more (`due`, at once).
  for (const Kept& kept : p.kept) {
    std::uint64_t prev = kept.queued.prevServerId;
    if (kept.gapBefore && kept.queued.serverId > p.readUpTo && prev > p.readUpTo &&
        !p.held.contains(prev)) {
      p.liveAt = Clock::now();
      return std::nullopt;
    }
  }
  p.liveEpoch = epochNow;
  std::vector<Kept> offers;
  for (Kept& kept : p.kept) {
    std::uint64_t id = kept.queued.serverId;
    if (id <= p.readUpTo || p.held.contains(id)) continue;
    p.held.insert(id);
    offers.push_back(std::move(kept));
  }
  p.kept.clear();
  return offers;
}

bool StreamIntake::beginImport(const std::string& phone, std::uint64_t epochNow,
                               Clock::time_point startedAt) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return true;  // not a session here: import as asked
  Phone& p = it->second;
  forgetStaleLive(p, epochNow);
  if (p.liveEpoch) {
    p.importAsked = false;
    return false;
  }
  p.importing = true;
  p.importMayGoLive = startedAt >= p.liveAt;
  p.importAsked = false;
  return true;
}

void StreamIntake::endImport(const std::string& phone, std::optional<std::uint64_t> readUpTo) {
  std::deque<Kept> dropped;
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return;
  Phone& p = it->second;
  p.importing = false;
  p.importMayGoLive = false;
  if (readUpTo) p.readUpTo = std::max(p.readUpTo, *readUpTo);
  while (!p.kept.empty() && p.kept.front().queued.serverId <= p.readUpTo) {
    dropped.push_back(std::move(p.kept.front()));
    p.kept.pop_front();
  }
  // Notices from several nodes interleave: drop the rest the import read too.
  std::erase_if(p.kept, [&](const Kept& kept) { return kept.queued.serverId <= p.readUpTo; });
}

std::uint64_t StreamIntake::readUpTo(const std::string& phone) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  return it == phones_.end() ? 0 : it->second.readUpTo;
}

bool StreamIntake::inMemory(const std::string& phone, std::uint64_t serverId) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  return it != phones_.end() && it->second.held.contains(serverId);
}

bool StreamIntake::holdsAny(const std::string& phone) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  return it != phones_.end() && !it->second.held.empty();
}

void StreamIntake::settled(const std::string& phone, std::uint64_t serverId) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it != phones_.end()) it->second.held.erase(serverId);
}

std::vector<std::uint64_t> StreamIntake::unaccountedIn(
    const Phone& p, const std::vector<std::uint64_t>& serverIds) {
  std::unordered_set<std::uint64_t> kept;
  for (const Kept& k : p.kept) kept.insert(k.queued.serverId);
  std::vector<std::uint64_t> out;
  for (std::uint64_t id : serverIds) {
    if (id > p.readUpTo && !p.held.contains(id) && !kept.contains(id)) out.push_back(id);
  }
  return out;
}

std::vector<std::uint64_t> StreamIntake::unaccounted(const std::string& phone,
                                                     const std::vector<std::uint64_t>& serverIds) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return {};
  return unaccountedIn(it->second, serverIds);
}

std::vector<std::pair<std::string, std::uint64_t>> StreamIntake::liveNow(std::uint64_t epochNow) {
  std::vector<std::pair<std::string, std::uint64_t>> live;
  std::lock_guard lock(mutex_);
  for (const auto& [phone, p] : phones_) {
    if (p.liveEpoch == epochNow) live.emplace_back(phone, p.readUpTo);
  }
  return live;
}

bool StreamIntake::recheck(const std::string& phone, const std::vector<std::uint64_t>& stillStored,
                           std::uint64_t epochNow) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return false;  // its next login imports what waits
  Phone& p = it->second;
  // Its notice may have come since the caller looked.
  if (unaccountedIn(p, stillStored).empty()) return false;
  forgetStaleLive(p, epochNow);
  p.liveEpoch.reset();
  p.liveAt = std::max(p.liveAt, Clock::now());
  if (p.importAsked || p.importing) return false;  // `due` asks once that one ends
  p.importAsked = true;
  return true;
}

std::vector<std::string> StreamIntake::due(Clock::time_point now, std::uint64_t epochNow) {
  std::vector<std::string> phones;
  std::lock_guard lock(mutex_);
  for (auto& [phone, p] : phones_) {
    forgetStaleLive(p, epochNow);
    if (p.liveEpoch || p.importing || p.importAsked || p.liveAt > now) continue;
    p.importAsked = true;
    phones.push_back(phone);
  }
  return phones;
}

// ---------------------------------------------------------------- StreamCopies

std::string StreamCopies::messageKey(std::uint64_t messageId) {
  return "m/" + std::to_string(messageId);
}

std::string StreamCopies::receiptKey(std::uint64_t receiptOf, int kind, const std::string& reader) {
  return "r/" + std::to_string(receiptOf) + "/" + std::to_string(kind) + "/" + reader;
}

std::string StreamCopies::keyOf(const session::OutboundMessage& message) {
  return messageKey(message.id);
}

std::string StreamCopies::keyOf(const session::OutboundReceipt& receipt) {
  return receiptKey(receipt.messageId, static_cast<int>(receipt.kind), receipt.by);
}

void StreamCopies::add(const std::string& phone, const std::string& key, std::uint64_t serverId) {
  std::lock_guard lock(mutex_);
  Copies& copies = phones_[phone];
  if (!copies.ids.insert(serverId).second) return;
  copies.byKey[key].push_back(serverId);
}

bool StreamCopies::holds(const std::string& phone, std::uint64_t serverId) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  return it != phones_.end() && it->second.ids.contains(serverId);
}

std::vector<std::string> StreamCopies::phones() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [phone, copies] : phones_) out.push_back(phone);
  return out;
}

std::vector<std::uint64_t> StreamCopies::taken(const std::string& phone,
                                               const std::unordered_set<std::string>& stored) {
  std::vector<std::uint64_t> out;
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return out;
  Copies& copies = it->second;
  for (auto key = copies.byKey.begin(); key != copies.byKey.end();) {
    if (stored.contains(key->first)) {
      ++key;
      continue;
    }
    for (std::uint64_t id : key->second) {
      copies.ids.erase(id);
      out.push_back(id);
    }
    key = copies.byKey.erase(key);
  }
  if (copies.byKey.empty()) phones_.erase(it);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::uint64_t> StreamCopies::take(const std::string& phone, const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  if (it == phones_.end()) return {};
  Copies& copies = it->second;
  auto found = copies.byKey.find(key);
  if (found == copies.byKey.end()) return {};
  std::vector<std::uint64_t> out = std::move(found->second);
  copies.byKey.erase(found);
  for (std::uint64_t id : out) copies.ids.erase(id);
  if (copies.byKey.empty()) phones_.erase(it);
  return out;
}

bool StreamCopies::has(const std::string& phone, const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = phones_.find(phone);
  return it != phones_.end() && it->second.byKey.contains(key);
}

void StreamCopies::owe(std::vector<Owed> rows) {
  std::lock_guard lock(mutex_);
  for (Owed& row : rows) {
    std::int64_t at = row.row;
    (row.message ? owedMessages_ : owedReceipts_).insert_or_assign(at, std::move(row));
  }
}

void StreamCopies::forgive(bool message, const std::vector<std::int64_t>& rows) {
  std::lock_guard lock(mutex_);
  auto& owed = message ? owedMessages_ : owedReceipts_;
  if (owed.empty()) return;
  for (std::int64_t row : rows) owed.erase(row);
}

std::vector<StreamCopies::Owed> StreamCopies::owed(std::size_t limit) {
  std::vector<Owed> out;
  std::lock_guard lock(mutex_);
  for (const auto* table : {&owedMessages_, &owedReceipts_}) {
    for (const auto& [row, owed] : *table) {
      if (out.size() >= limit) return out;
      out.push_back(owed);
    }
  }
  return out;
}

void StreamCopies::paid(const Owed& row) {
  std::lock_guard lock(mutex_);
  auto& owed = row.message ? owedMessages_ : owedReceipts_;
  auto it = owed.find(row.row);
  if (it != owed.end() && it->second.key == row.key) owed.erase(it);
}

std::size_t StreamCopies::owing() {
  std::lock_guard lock(mutex_);
  return owedMessages_.size() + owedReceipts_.size();
}

}  // namespace switchboard::messaging
