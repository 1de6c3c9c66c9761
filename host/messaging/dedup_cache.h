// The last sends the server acknowledged, by (sender, clientMsgId), so a phone
// re-sending an acknowledged message gets the first id back and nothing is
// delivered twice. Bounded: the oldest entries are forgotten first. Messages
// that went through the store also have a `dedup` row there (expiring with the
// offline TTL), which covers re-sends after a restart. Thread-safe.
//
// The cache also says when a miss is final, so a new message costs no store
// read: loaded with every `dedup` row at start (load()) and given each stored
// one once it is durable (rememberStored()), it holds everything the table
// holds until it forgets a stored entry or the table was too big to load.
// From then on coversStore() is false and a miss must ask the store.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace switchboard::messaging {

// The reply to a send. `deliveredAt` (ms since the epoch) is set when the
// "delivered" tick rode in the first reply (so a re-send repeats it); 0 when the
// tick comes, or came, as a receipt of its own.
struct SentMessage {
  std::uint64_t id = 0;
  std::int64_t timestamp = 0;
  std::int64_t deliveredAt = 0;
};

class DedupCache {
 public:
  explicit DedupCache(std::size_t capacity);

  std::optional<SentMessage> find(std::string_view sender, std::string_view clientMsgId) const;
  void remember(std::string_view sender, std::string_view clientMsgId, SentMessage sent);
  // A send whose `dedup` row is durable in the store.
  void rememberStored(std::string_view sender, std::string_view clientMsgId, SentMessage sent);
  // At start: `rows` are the newest stored sends, oldest first; `complete` says
  // whether they are all the store holds.
  struct StoredRow {
    std::string sender;
    std::string clientMsgId;
    SentMessage sent;
  };
  void load(const std::vector<StoredRow>& rows, bool complete);
  // Whether a miss means the store has no row either.
  bool coversStore() const;
  std::size_t size() const;

 private:
  // A keyed 64-bit hash (SipHash, random key per process) of both strings.
  std::uint64_t keyOf(std::string_view sender, std::string_view clientMsgId) const;

  const std::size_t capacity_;
  unsigned char hashKey_[16];
  mutable std::mutex mutex_;
  void add(std::uint64_t key, SentMessage sent, bool stored);  // under mutex_

  struct Entry {
    SentMessage sent;
    bool stored = false;  // the store has a row for it
  };
  std::unordered_map<std::uint64_t, Entry> entries_;
  std::deque<std::uint64_t> order_;  // oldest first
  bool coversStore_ = true;
};

}  // namespace switchboard::messaging
