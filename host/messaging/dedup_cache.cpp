#include "messaging/dedup_cache.h"

#include <sodium.h>

#include <algorithm>
#include <string>

namespace switchboard::messaging {

DedupCache::DedupCache(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {
  static_assert(sizeof(hashKey_) == crypto_shorthash_KEYBYTES);
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  crypto_shorthash_keygen(hashKey_);
}

std::uint64_t DedupCache::keyOf(std::string_view sender, std::string_view clientMsgId) const {
  std::string joined;
  joined.reserve(sender.size() + 1 + clientMsgId.size());
  joined.append(sender).push_back('\0');
  joined.append(clientMsgId);
  std::uint64_t key = 0;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&key),
                   reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), hashKey_);
  return key;
}

std::optional<SentMessage> DedupCache::find(std::string_view sender,
                                            std::string_view clientMsgId) const {
  std::uint64_t key = keyOf(sender, clientMsgId);
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second.sent;
}

void DedupCache::remember(std::string_view sender, std::string_view clientMsgId, SentMessage sent) {
  std::uint64_t key = keyOf(sender, clientMsgId);
  std::lock_guard lock(mutex_);
  add(key, sent, false);
}

void DedupCache::rememberStored(std::string_view sender, std::string_view clientMsgId,
                                SentMessage sent) {
  std::uint64_t key = keyOf(sender, clientMsgId);
  std::lock_guard lock(mutex_);
  add(key, sent, true);
}

void DedupCache::load(const std::vector<StoredRow>& rows, bool complete) {
  std::lock_guard lock(mutex_);
  for (const StoredRow& row : rows) add(keyOf(row.sender, row.clientMsgId), row.sent, true);
  if (!complete) coversStore_ = false;
}

bool DedupCache::coversStore() const {
  std::lock_guard lock(mutex_);
  return coversStore_;
}

void DedupCache::add(std::uint64_t key, SentMessage sent, bool stored) {
  auto [it, fresh] = entries_.try_emplace(key, Entry{sent, stored});
  if (!fresh) {
    it->second.stored = it->second.stored || stored;
    return;
  }
  order_.push_back(key);
  if (order_.size() > capacity_) {
    auto oldest = entries_.find(order_.front());
    if (oldest->second.stored) coversStore_ = false;
    entries_.erase(oldest);
    order_.pop_front();
  }
}

std::size_t DedupCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace switchboard::messaging
