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
//
// Memory: plain arrays, no node per entry. Entries sit in a ring in the order
// they were first remembered (the oldest is overwritten once the ring holds
// `capacity`), found through an open-addressing index of ring positions. Both
// grow by doubling up to the bound, so a steady stream of sends allocates
// nothing.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
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

  // A send's identity: a keyed 64-bit hash (SipHash, random key per process) of
  // (sender, clientMsgId). Computed once per send and passed to find() and
  // remember(), so the strings need not be kept.
  struct Key {
    std::uint64_t hash = 0;
  };
  Key key(std::string_view sender, std::string_view clientMsgId) const;

  std::optional<SentMessage> find(Key key) const;
  // find() and coversStore() at once, under one lock: what a new send asks.
  struct Lookup {
    std::optional<SentMessage> sent;  // the first answer, when remembered
    bool askStore = false;            // not remembered, and the store may have a row
  };
  Lookup lookup(Key key) const;
  void remember(Key key, SentMessage sent);
  std::optional<SentMessage> find(std::string_view sender, std::string_view clientMsgId) const {
    return find(key(sender, clientMsgId));
  }
  void remember(std::string_view sender, std::string_view clientMsgId, SentMessage sent) {
    remember(key(sender, clientMsgId), sent);
  }
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
  struct Entry {
    std::uint64_t key = 0;
    SentMessage sent;
    bool stored = false;  // the store has a row for it
  };

  // All under mutex_.
  std::optional<SentMessage> findLocked(std::uint64_t key) const;
  void add(std::uint64_t key, SentMessage sent, bool stored);
  // The index slot holding `key`, or the empty slot where it would go.
  std::size_t slotOf(std::uint64_t key) const;
  void unindex(std::size_t slot);
  void growIndex();

  const std::size_t capacity_;
  unsigned char hashKey_[16];
  mutable std::mutex mutex_;
  std::vector<Entry> ring_;  // at most capacity_; ring_[oldest_] is the oldest once full
  std::size_t oldest_ = 0;
  // Linear probing over ring positions + 1 (0: empty); a power of two at least
  // twice ring_.size(), so a probe ends at an empty slot.
  std::vector<std::uint32_t> index_;
  bool coversStore_ = true;
};

}  // namespace switchboard::messaging
