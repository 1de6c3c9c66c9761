// The cluster's shared directory: what every node must see the same way.
//
// Each kind of record lives in its own JetStream key-value bucket, keyed by an
// encoded phone or group id (cluster_records.h):
//   sb_users     phone -> device key hash, device name, registration time
//   sb_contacts  owner -> the phones the owner added
//   sb_groups    group id -> name, owner, members
//   sb_sessions  phone -> the node holding its session, and which login
// docs/cluster.md says why these are buckets and what is kept where else.
//
// Writes that two nodes might race on are conditional (KV revisions): a new
// device replaces the old one only over the revision it read, a session claim
// only wins if newer. Read-modify-write helpers retry a few times on conflict.
//
// Every call blocks on NATS: call it on the link's worker thread (or a test's
// own thread), never on a network thread. When the link is degraded every call
// throws ClusterError at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cluster/kv_bucket.h"

namespace switchboard::cluster {

class NatsLink;

struct UserEntry {
  std::string phone;
  std::string keyHash;  // bytes
  std::string deviceName;
  std::int64_t registeredAtMs = 0;
  std::uint64_t revision = 0;  // as read; 0 for a user not yet written
};

struct GroupEntry {
  std::string id;
  std::string name;
  std::string owner;
  std::vector<std::string> members;
  std::uint64_t revision = 0;
};

struct SessionLocation {
  std::string node;
  std::uint64_t sessionId = 0;  // unique per login
  std::int64_t atMs = 0;        // when the login happened (the claiming node's clock)
  std::uint64_t revision = 0;
};

class ClusterDirectory {
 public:
  explicit ClusterDirectory(NatsLink& link);

  // ---- users and their one device
  std::optional<UserEntry> user(const std::string& phone);
  // A new verified device: written only over `user.revision` (0: the phone
  // must not exist yet). False when another node changed the user first;
  // read again and decide again.
  bool writeUser(const UserEntry& user);
  void deleteUser(const std::string& phone);

  // ---- contacts
  std::vector<std::string> contacts(const std::string& owner);
  void addContact(const std::string& owner, const std::string& contact);
  void removeContact(const std::string& owner, const std::string& contact);

  // ---- groups
  std::optional<GroupEntry> group(const std::string& id);
  bool writeGroup(const GroupEntry& group);  // over group.revision, like writeUser
  void deleteGroup(const std::string& id);

  // ---- where each phone is logged in
  std::optional<SessionLocation> location(const std::string& phone);
  // Records that `phone` logged in on `where.node`. A claim older (atMs) than
  // the one recorded loses: returns false and changes nothing. The node that
  // held the phone before sees the change through watchLocations and closes
  // its session ("logged in elsewhere").
  bool claim(const std::string& phone, const SessionLocation& where);
  // The phone's session `sessionId` ended: forget it, unless a newer login replaced it.
  void release(const std::string& phone, std::uint64_t sessionId);
  // Every phone's location now, then every change (nullopt: released), until
  // keepGoing() is false. Throws ClusterError when NATS goes away.
  void watchLocations(const std::function<void(const std::string& phone,
                                               const std::optional<SessionLocation>&)>& change,
                      const std::function<bool()>& keepGoing);

 private:
  KvBucket users_;
  KvBucket contacts_;
  KvBucket groups_;
  KvBucket sessions_;
};

}  // namespace switchboard::cluster
