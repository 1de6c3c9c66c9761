// The cluster's shared directory: what every node must see the same way.
//
// Each kind of record lives in its own JetStream key-value bucket, keyed by an
// encoded phone or group id (cluster_records.h):
//   sb_users     phone -> device key hash, device name, registration time
//   sb_contacts  owner -> the phones the owner added
//   sb_groups    group id -> name, owner, members
//   sb_member_groups  phone -> the ids of the groups the phone is in (an
//                index for listing; the group record decides membership)
//   sb_sessions  phone -> the node holding its session, and which login
//   sb_numbers   user number -> phone (a receipt names a message id, whose
//                high bits are its sender's number)
//   sb_counters  counters handed out in ranges: user numbers, message-id
//                sequence blocks
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

#include "cluster/cluster_records.h"
#include "cluster/kv_bucket.h"

namespace switchboard::cluster {

class NatsLink;

struct UserEntry {
  std::string phone;
  std::string keyHash;  // bytes
  std::string deviceName;
  std::int64_t registeredAtMs = 0;
  std::uint64_t number = 0;    // cluster-unique (allocate("user_number", 1))
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
  std::string lastNode{};  // a released record (node empty): the node that held the phone last

  // The node that holds the phone, or held it last; empty: never claimed.
  const std::string& holder() const { return node.empty() ? lastNode : node; }
};

class ClusterDirectory {
 public:
  explicit ClusterDirectory(NatsLink& link);

  // Creates or binds every bucket and waits until each answers (ClusterNode
  // does it as soon as it is connected, so a node's first registration does
  // not wait for it). Throws ClusterError.
  void open();

  // ---- users and their one device
  std::optional<UserEntry> user(const std::string& phone);
  // A new verified device: written only over `user.revision` (0: the phone
  // must not exist yet). False when another node changed the user first;
  // read again and decide again.
  bool writeUser(const UserEntry& user);
  void deleteUser(const std::string& phone);
  // Which phone holds user number `number` (bindNumber wrote it).
  std::optional<std::string> phoneOfNumber(std::uint64_t number);
  void bindNumber(std::uint64_t number, const std::string& phone);

  // ---- counters shared by the cluster
  // Hands out `count` consecutive values of counter `name` and returns the
  // first: a read, then a write over the revision read, again on a conflict,
  // so two nodes asking at once get disjoint ranges. A counter never written
  // starts at `first`.
  std::uint64_t allocate(const std::string& name, std::uint64_t count, std::uint64_t first);

  // ---- contacts
  std::vector<std::string> contacts(const std::string& owner);
  void addContact(const std::string& owner, const std::string& contact);
  void removeContact(const std::string& owner, const std::string& contact);
  // Every owner's list now, then every change (a deleted list: empty), until
  // keepGoing() is false. Throws ClusterError when NATS goes away.
  void watchContacts(const std::function<void(const std::string& owner,
                                              const std::vector<std::string>& contacts)>& change,
                     const std::function<bool()>& keepGoing);

  // ---- groups
  std::optional<GroupEntry> group(const std::string& id);
  bool writeGroup(const GroupEntry& group);  // over group.revision, like writeUser
  void deleteGroup(const std::string& id);
  // The index of the groups a phone is in, sorted. Written after the group
  // record, so it may name a group the phone has left (the record decides).
  std::vector<std::string> groupsOf(const std::string& phone);
  void addGroupOf(const std::string& phone, const std::string& id);
  void removeGroupOf(const std::string& phone, const std::string& id);

  // ---- what each sender put into the stream lately (sb_sent; the outbox
  // writes it, DeliveryTransport): its clientMsgIds within the stream's
  // duplicate window, which a login after a move loads into the node's dedup
  // cache, so a re-send there is answered with the first id. One watch of
  // the sender's keys (KvBucket::values), not a get each. A clientMsgId for
  // which `known` is true is left out: the caller has it already.
  std::vector<SentRecord> sentBy(
      const std::string& sender,
      const std::function<bool(const std::string& clientMsgId)>& known = nullptr);

  // ---- where each phone is logged in
  std::optional<SessionLocation> location(const std::string& phone);
  // Records that `phone` logged in on `where.node`. A claim older (atMs) than
  // the one recorded loses: returns false and changes nothing. The node that
  // held the phone before is told (a kick notice or handover) and also sees
  // the change through watchLocations, so it closes its session ("logged in
  // elsewhere") even when the notice is lost.
  // `previous`, when given, receives the record the claim replaced (if any),
  // released ones too: its holder() is the node whose store may still hold
  // rows for the phone.
  bool claim(const std::string& phone, const SessionLocation& where,
             std::optional<SessionLocation>* previous = nullptr);
  // The phone's session `sessionId` ended: forget it, unless a newer login replaced it.
  // Session ids are unique per node: with `node` given, only a record naming
  // that node is released.
  void release(const std::string& phone, std::uint64_t sessionId, const std::string& node = "");
  // Every phone's location now, then every change, until keepGoing() is
  // false: a released record has no node (its lastNode held the phone last);
  // nullopt for a deleted one. Throws ClusterError when NATS goes away.
  void watchLocations(const std::function<void(const std::string& phone,
                                               const std::optional<SessionLocation>&)>& change,
                      const std::function<bool()>& keepGoing);

 private:
  KvBucket users_;
  KvBucket contacts_;
  KvBucket groups_;
  KvBucket memberGroups_;
  KvBucket sessions_;
  KvBucket numbers_;
  KvBucket counters_;
  KvBucket sent_;
};

}  // namespace switchboard::cluster
