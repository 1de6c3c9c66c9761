#include "messaging/dedup_cache.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <limits>
#include <stdexcept>

namespace switchboard::messaging {

namespace {

// Phones and clientMsgIds that pass the field rules fit; longer ones (rows
// loaded from an older store, say) are hashed from the heap.
constexpr std::size_t kJoinedOnStack = 256;
constexpr std::size_t kFirstIndexSlots = 64;

}  // namespace

DedupCache::DedupCache(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {
  static_assert(sizeof(hashKey_) == crypto_shorthash_KEYBYTES);
  if (capacity_ >= std::numeric_limits<std::uint32_t>::max() / 2) {
    throw std::invalid_argument("dedup cache capacity too large");
  }
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  crypto_shorthash_keygen(hashKey_);
}

DedupCache::Key DedupCache::key(std::string_view sender, std::string_view clientMsgId) const {
  // The hash of sender, NUL, clientMsgId (the NUL keeps ("+12", "3") apart from ("+1", "23")).
  std::size_t length = sender.size() + 1 + clientMsgId.size();
  std::array<unsigned char, kJoinedOnStack> onStack;
  std::string onHeap;
  unsigned char* joined = onStack.data();
  if (length > onStack.size()) {
    onHeap.resize(length);
    joined = reinterpret_cast<unsigned char*>(onHeap.data());
  }
  std::copy(sender.begin(), sender.end(), joined);
  joined[sender.size()] = '\0';
  std::copy(clientMsgId.begin(), clientMsgId.end(), joined + sender.size() + 1);
  Key key;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&key.hash), joined, length, hashKey_);
  return key;
}

std::optional<SentMessage> DedupCache::find(Key key) const {
  std::lock_guard lock(mutex_);
  return findLocked(key.hash);
}

DedupCache::Lookup DedupCache::lookup(Key key) const {
  std::lock_guard lock(mutex_);
  Lookup found{findLocked(key.hash)};
  found.askStore = !found.sent && !coversStore_;
  return found;
}

void DedupCache::remember(Key key, SentMessage sent) {
  std::lock_guard lock(mutex_);
  add(key.hash, sent, false);
}

void DedupCache::rememberStored(std::string_view sender, std::string_view clientMsgId,
                                SentMessage sent) {
  Key k = key(sender, clientMsgId);
  std::lock_guard lock(mutex_);
  add(k.hash, sent, true);
}

void DedupCache::load(const std::vector<StoredRow>& rows, bool complete) {
  std::lock_guard lock(mutex_);
  for (const StoredRow& row : rows) add(key(row.sender, row.clientMsgId).hash, row.sent, true);
  if (!complete) coversStore_ = false;
}

bool DedupCache::coversStore() const {
  std::lock_guard lock(mutex_);
  return coversStore_;
}

std::size_t DedupCache::size() const {
  std::lock_guard lock(mutex_);
  return ring_.size();
}

std::optional<SentMessage> DedupCache::findLocked(std::uint64_t key) const {
  if (index_.empty()) return std::nullopt;
  std::uint32_t position = index_[slotOf(key)];
  if (position == 0) return std::nullopt;
  return ring_[position - 1].sent;
}

std::size_t DedupCache::slotOf(std::uint64_t key) const {
  std::size_t mask = index_.size() - 1;
  for (std::size_t slot = key & mask;; slot = (slot + 1) & mask) {
    std::uint32_t position = index_[slot];
    if (position == 0 || ring_[position - 1].key == key) return slot;
  }
}

// Backward-shift deletion: the entries after the freed slot in its probe run
// move up when their home slot allows, so no probe meets a hole too early.
void DedupCache::unindex(std::size_t slot) {
  std::size_t mask = index_.size() - 1;
  std::size_t next = slot;
  for (;;) {
    next = (next + 1) & mask;
    std::uint32_t position = index_[next];
    if (position == 0) break;
    std::size_t home = ring_[position - 1].key & mask;
    // `next` may fill `slot` unless its home lies cyclically in (slot, next].
    bool homeBetween = slot <= next ? (slot < home && home <= next) : (slot < home || home <= next);
    if (homeBetween) continue;
    index_[slot] = position;
    slot = next;
  }
  index_[slot] = 0;
}

void DedupCache::growIndex() {
  std::size_t slots = index_.empty() ? kFirstIndexSlots : index_.size() * 2;
  index_.assign(slots, 0);
  for (std::size_t i = 0; i < ring_.size(); ++i) {
    index_[slotOf(ring_[i].key)] = static_cast<std::uint32_t>(i + 1);
  }
}

void DedupCache::add(std::uint64_t key, SentMessage sent, bool stored) {
  if (index_.size() < 2 * (ring_.size() + 1)) growIndex();
  std::size_t slot = slotOf(key);
  if (std::uint32_t position = index_[slot]; position != 0) {
    // Known: it keeps its first answer and its place in the order.
    Entry& known = ring_[position - 1];
    known.stored = known.stored || stored;
    return;
  }
  std::size_t position;
  if (ring_.size() < capacity_) {
    position = ring_.size();
    ring_.push_back(Entry{key, sent, stored});
  } else {
    // Full: the oldest entry's place takes the new one.
    position = oldest_;
    oldest_ = (oldest_ + 1) % capacity_;
    Entry& old = ring_[position];
    if (old.stored) coversStore_ = false;
    unindex(slotOf(old.key));
    old = Entry{key, sent, stored};
    slot = slotOf(key);  // the shift may have moved the empty slot
  }
  index_[slot] = static_cast<std::uint32_t>(position + 1);
}

}  // namespace switchboard::messaging
