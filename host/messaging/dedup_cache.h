// The last sends the server acknowledged, by (sender, clientMsgId), so a phone
// re-sending an acknowledged message gets the first id back and nothing is
// delivered twice. Bounded: the oldest entries are forgotten first. Messages
// that went through the store also have a `dedup` row there (expiring with the
// offline TTL), which covers re-sends after a restart. Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace switchboard::messaging {

struct SentMessage {
  std::uint64_t id = 0;
  std::int64_t timestamp = 0;
};

class DedupCache {
 public:
  explicit DedupCache(std::size_t capacity);

  std::optional<SentMessage> find(std::string_view sender, std::string_view clientMsgId) const;
  void remember(std::string_view sender, std::string_view clientMsgId, SentMessage sent);
  std::size_t size() const;

 private:
  // A keyed 64-bit hash (SipHash, random key per process) of both strings.
  std::uint64_t keyOf(std::string_view sender, std::string_view clientMsgId) const;

  const std::size_t capacity_;
  unsigned char hashKey_[16];
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, SentMessage> entries_;
  std::deque<std::uint64_t> order_;  // oldest first
};

}  // namespace switchboard::messaging
