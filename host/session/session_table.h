// Which phone is online, and where: the host-wide index of live sessions.
//
// A session lives on the network thread that accepted its connection; the table
// only says where it is. Anything that wants to reach a session (a delivery, a
// receipt, a kick) looks it up here and posts to that thread, where the session
// itself is found through the weak reference. The table is thread-safe; every
// method takes one short mutex and never calls out while holding it.
//
// Ordering contract, relied on by message delivery: a message is made durable
// first and looked up here second; a login registers here first and reads the
// offline queue second (or, on a single node, finds nothing counted for the
// phone second and reads nothing: messaging/stored_rows.h counts a row before
// its write is queued). Whichever order two threads run in, the message is
// either posted to the new session or found in the queue by it (or both; the
// session drops a duplicate by id).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace switchboard::session {

class LiveSession;

// Gauges a session publishes for everyone else to read without touching it.
struct SessionGauges {
  std::atomic<std::uint64_t> queueLength{0};  // messages + receipts waiting to reach the phone
  std::atomic<std::uint64_t> maxQueueLength{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint8_t> presence{0};  // a PresenceState: online or away
};

struct SessionRef {
  std::string phone;
  std::uint64_t number = 0;  // the user's number (message ids carry it)
  std::uint64_t sessionId = 0;
  std::size_t threadIndex = 0;     // the network thread that owns the session
  std::uint64_t connectionId = 0;  // the listener's id of its connection
  std::string peer;
  std::int64_t since = 0;              // login time, ms since the epoch
  std::weak_ptr<LiveSession> session;  // lock only on threadIndex's thread
  std::shared_ptr<SessionGauges> gauges;
};

// Enough to reach a phone's session: post to `threadIndex`, lock `session` there.
struct SessionAddress {
  std::size_t threadIndex = 0;
  std::weak_ptr<LiveSession> session;
};

class SessionTable {
 public:
  SessionTable();
  // Makes `ref` the phone's live session and returns the one it replaced.
  std::optional<SessionRef> attach(SessionRef ref);
  // Removes the phone's entry only if it is still `sessionId` (a newer login
  // may already have replaced it). Returns whether it removed it.
  bool detach(const std::string& phone, std::uint64_t sessionId);
  std::optional<SessionRef> find(const std::string& phone) const;
  bool isOnline(const std::string& phone) const;
  // The phone's session, cheaper than find() (no strings copied).
  std::optional<SessionAddress> locate(const std::string& phone) const;

  std::size_t size() const;
  // Every session, ordered by phone.
  std::vector<SessionRef> all() const;
  // The `limit` sessions with the longest outbound queues, longest first.
  std::vector<SessionRef> longestQueues(std::size_t limit) const;

  // Unique across restarts too (they start from the clock): the store marks
  // rows a session holds with its id.
  std::uint64_t nextSessionId() { return ++lastSessionId_; }

 private:
  mutable std::mutex mutex_;
  // Hashed: a login's attach and every delivery's locate() look a phone up here.
  std::unordered_map<std::string, SessionRef> byPhone_;
  std::atomic<std::uint64_t> lastSessionId_{0};
};

}  // namespace switchboard::session
