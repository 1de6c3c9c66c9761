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
  return it->second;
}

void DedupCache::remember(std::string_view sender, std::string_view clientMsgId, SentMessage sent) {
  std::uint64_t key = keyOf(sender, clientMsgId);
  std::lock_guard lock(mutex_);
  if (!entries_.emplace(key, sent).second) return;
  order_.push_back(key);
  if (order_.size() > capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
}

std::size_t DedupCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace switchboard::messaging
