#include "cluster/cluster_directory.h"

#include <algorithm>
#include <utility>

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {

constexpr int kConflictRetries = 8;

kj::ArrayPtr<const kj::byte> bytesOf(const std::string& text) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()), text.size());
}

std::string userBytes(const UserEntry& user) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::UserRecord>();
  out.setPhone(user.phone);
  out.setKeyHash(bytesOf(user.keyHash));
  out.setDeviceName(user.deviceName);
  out.setRegisteredAtMs(user.registeredAtMs);
  out.setNumber(user.number);
  return recordBytes(message);
}

UserEntry userFrom(const KvValue& value) {
  RecordReader reader(value.bytes.data(), value.bytes.size());
  auto in = reader.get<proto::cluster::UserRecord>();
  UserEntry user;
  user.phone = in.getPhone();
  auto hash = in.getKeyHash();
  user.keyHash.assign(reinterpret_cast<const char*>(hash.begin()), hash.size());
  user.deviceName = in.getDeviceName();
  user.registeredAtMs = in.getRegisteredAtMs();
  user.number = in.getNumber();
  user.revision = value.revision;
  return user;
}

std::string contactBytes(const std::vector<std::string>& contacts) {
  capnp::MallocMessageBuilder message;
  auto list = message.initRoot<proto::cluster::ContactList>().initContacts(
      static_cast<unsigned>(contacts.size()));
  for (unsigned i = 0; i < contacts.size(); ++i) list.set(i, contacts[i]);
  return recordBytes(message);
}

std::vector<std::string> contactsFrom(const KvValue& value) {
  RecordReader reader(value.bytes.data(), value.bytes.size());
  std::vector<std::string> out;
  for (auto contact : reader.get<proto::cluster::ContactList>().getContacts()) {
    out.emplace_back(contact);
  }
  return out;
}

std::string groupBytes(const GroupEntry& group) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::GroupRecord>();
  out.setId(group.id);
  out.setName(group.name);
  out.setOwner(group.owner);
  auto members = out.initMembers(static_cast<unsigned>(group.members.size()));
  for (unsigned i = 0; i < group.members.size(); ++i) members.set(i, group.members[i]);
  return recordBytes(message);
}

GroupEntry groupFrom(const KvValue& value) {
  RecordReader reader(value.bytes.data(), value.bytes.size());
  auto in = reader.get<proto::cluster::GroupRecord>();
  GroupEntry group;
  group.id = in.getId();
  group.name = in.getName();
  group.owner = in.getOwner();
  for (auto member : in.getMembers()) group.members.emplace_back(member);
  group.revision = value.revision;
  return group;
}

std::string locationBytes(const SessionLocation& where) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::SessionRecord>();
  out.setNode(where.node);
  out.setSessionId(where.sessionId);
  out.setAtMs(where.atMs);
  out.setLastNode(where.lastNode);
  return recordBytes(message);
}

SessionLocation locationFrom(const KvValue& value) {
  RecordReader reader(value.bytes.data(), value.bytes.size());
  auto in = reader.get<proto::cluster::SessionRecord>();
  return SessionLocation{in.getNode(), in.getSessionId(), in.getAtMs(), value.revision,
                         in.getLastNode()};
}

// Writes `bytes` under `key` only over `revision` (0: only if absent).
bool writeOver(KvBucket& bucket, const std::string& key, const std::string& bytes,
               std::uint64_t revision) {
  return revision == 0 ? bucket.create(key, bytes) : bucket.update(key, bytes, revision);
}

}  // namespace

ClusterDirectory::ClusterDirectory(NatsLink& link)
    : users_(link, {"sb_users", std::chrono::seconds(0), 1, false}),
      contacts_(link, {"sb_contacts", std::chrono::seconds(0), 1, false}),
      groups_(link, {"sb_groups", std::chrono::seconds(0), 1, false}),
      memberGroups_(link, {"sb_member_groups", std::chrono::seconds(0), 1, false}),
      sessions_(link, {"sb_sessions", std::chrono::seconds(0), 1, false}),
      numbers_(link, {"sb_numbers", std::chrono::seconds(0), 1, false}),
      counters_(link, {"sb_counters", std::chrono::seconds(0), 1, false}),
      // As long as the stream's duplicate window (DeliveryTransportOptions).
      sent_(link, {kSentBucket, std::chrono::seconds(600), 1, false}) {}

void ClusterDirectory::open() {
  for (KvBucket* bucket :
       {&users_, &contacts_, &groups_, &memberGroups_, &sessions_, &numbers_, &counters_, &sent_}) {
    bucket->open();
  }
}

// ---------------------------------------------------------------- sent

std::vector<SentRecord> ClusterDirectory::sentBy(
    const std::string& sender, const std::function<bool(const std::string&)>& known) {
  std::vector<SentRecord> out;
  // One watch of the sender's keys (one token after it), not a get each: a
  // phone that sent thousands in the window moves with one request or two.
  for (const auto& [key, value] : sent_.values(encodeKeyToken(sender) + ".*")) {
    auto record = sentRecordOf(key, value.bytes);
    if (!record || (known && known(record->clientMsgId))) continue;
    out.push_back(std::move(*record));
  }
  return out;
}

// ---------------------------------------------------------------- users

std::optional<UserEntry> ClusterDirectory::user(const std::string& phone) {
  auto value = users_.get(encodeKeyToken(phone));
  if (!value) return std::nullopt;
  return userFrom(*value);
}

bool ClusterDirectory::writeUser(const UserEntry& user) {
  return writeOver(users_, encodeKeyToken(user.phone), userBytes(user), user.revision);
}

void ClusterDirectory::deleteUser(const std::string& phone) {
  users_.remove(encodeKeyToken(phone));
  contacts_.remove(encodeKeyToken(phone));
}

std::optional<std::string> ClusterDirectory::phoneOfNumber(std::uint64_t number) {
  auto value = numbers_.get(std::to_string(number));
  if (!value) return std::nullopt;
  return value->bytes;
}

void ClusterDirectory::bindNumber(std::uint64_t number, const std::string& phone) {
  numbers_.put(std::to_string(number), phone);
}

// ---------------------------------------------------------------- counters

std::uint64_t ClusterDirectory::allocate(const std::string& name, std::uint64_t count,
                                         std::uint64_t first) {
  for (int attempt = 0; attempt < kConflictRetries * 4; ++attempt) {
    auto value = counters_.get(name);
    std::uint64_t next = value ? std::stoull(value->bytes) : first;
    std::string after = std::to_string(next + count);
    if (writeOver(counters_, name, after, value ? value->revision : 0)) return next;
  }
  throw ClusterError("counter " + name + " kept changing under concurrent writers");
}

// ---------------------------------------------------------------- contacts

std::vector<std::string> ClusterDirectory::contacts(const std::string& owner) {
  auto value = contacts_.get(encodeKeyToken(owner));
  return value ? contactsFrom(*value) : std::vector<std::string>{};
}

namespace {
// A sorted list of texts under `key` (a ContactList record): read, change,
// write over the revision read; again on a conflict.
void changeList(KvBucket& bucket, const std::string& key, const std::string& what,
                const std::function<bool(std::vector<std::string>&)>& change) {
  std::string token = encodeKeyToken(key);
  for (int attempt = 0; attempt < kConflictRetries; ++attempt) {
    auto value = bucket.get(token);
    std::vector<std::string> list = value ? contactsFrom(*value) : std::vector<std::string>{};
    if (!change(list)) return;  // nothing to do
    if (writeOver(bucket, token, contactBytes(list), value ? value->revision : 0)) return;
  }
  throw ClusterError(what + " of " + key + " kept changing under concurrent writers");
}

void addToList(KvBucket& bucket, const std::string& key, const std::string& what,
               const std::string& item) {
  changeList(bucket, key, what, [&](std::vector<std::string>& list) {
    auto at = std::lower_bound(list.begin(), list.end(), item);
    if (at != list.end() && *at == item) return false;
    list.insert(at, item);
    return true;
  });
}

void removeFromList(KvBucket& bucket, const std::string& key, const std::string& what,
                    const std::string& item) {
  changeList(bucket, key, what, [&](std::vector<std::string>& list) {
    auto at = std::find(list.begin(), list.end(), item);
    if (at == list.end()) return false;
    list.erase(at);
    return true;
  });
}
}  // namespace

void ClusterDirectory::addContact(const std::string& owner, const std::string& contact) {
  addToList(contacts_, owner, "contacts", contact);
}

void ClusterDirectory::removeContact(const std::string& owner, const std::string& contact) {
  removeFromList(contacts_, owner, "contacts", contact);
}

void ClusterDirectory::watchContacts(
    const std::function<void(const std::string&, const std::vector<std::string>&)>& change,
    const std::function<bool()>& keepGoing) {
  contacts_.watch(
      [&](const std::string& key, const std::optional<KvValue>& value) {
        auto owner = decodeKeyToken(key);
        if (!owner) return;  // not a key this code writes
        change(*owner, value ? contactsFrom(*value) : std::vector<std::string>{});
      },
      keepGoing);
}

// ---------------------------------------------------------------- groups

std::optional<GroupEntry> ClusterDirectory::group(const std::string& id) {
  auto value = groups_.get(encodeKeyToken(id));
  if (!value) return std::nullopt;
  return groupFrom(*value);
}

bool ClusterDirectory::writeGroup(const GroupEntry& group) {
  return writeOver(groups_, encodeKeyToken(group.id), groupBytes(group), group.revision);
}

void ClusterDirectory::deleteGroup(const std::string& id) {
  groups_.remove(encodeKeyToken(id));
}

std::vector<std::string> ClusterDirectory::groupsOf(const std::string& phone) {
  auto value = memberGroups_.get(encodeKeyToken(phone));
  return value ? contactsFrom(*value) : std::vector<std::string>{};
}

void ClusterDirectory::addGroupOf(const std::string& phone, const std::string& id) {
  addToList(memberGroups_, phone, "groups", id);
}

void ClusterDirectory::removeGroupOf(const std::string& phone, const std::string& id) {
  removeFromList(memberGroups_, phone, "groups", id);
}

// ---------------------------------------------------------------- sessions

std::optional<SessionLocation> ClusterDirectory::location(const std::string& phone) {
  auto value = sessions_.get(encodeKeyToken(phone));
  if (!value) return std::nullopt;
  auto where = locationFrom(*value);
  if (where.node.empty()) return std::nullopt;  // released
  return where;
}

bool ClusterDirectory::claim(const std::string& phone, const SessionLocation& where,
                             std::optional<SessionLocation>* previous) {
  std::string key = encodeKeyToken(phone);
  for (int attempt = 0; attempt < kConflictRetries; ++attempt) {
    auto value = sessions_.get(key);
    if (previous != nullptr) previous->reset();
    if (value) {
      auto current = locationFrom(*value);
      if (current.sessionId == where.sessionId && current.node == where.node) return true;
      if (current.atMs > where.atMs) return false;  // a newer login holds the phone
      if (previous != nullptr && !current.holder().empty()) *previous = current;
    }
    if (writeOver(sessions_, key, locationBytes(where), value ? value->revision : 0)) return true;
  }
  throw ClusterError("the session record of " + phone + " kept changing under concurrent logins");
}

void ClusterDirectory::release(const std::string& phone, std::uint64_t sessionId,
                               const std::string& node) {
  std::string key = encodeKeyToken(phone);
  // Not a delete: a delete could land after a newer login's claim. A record
  // with no node, written over the revision that still named this session,
  // cannot.
  auto value = sessions_.get(key);
  if (!value) return;
  auto current = locationFrom(*value);
  if (current.sessionId != sessionId || current.node.empty()) return;
  if (!node.empty() && current.node != node) return;
  current.lastNode = std::exchange(current.node, {});
  sessions_.update(key, locationBytes(current), value->revision);
}

void ClusterDirectory::watchLocations(
    const std::function<void(const std::string&, const std::optional<SessionLocation>&)>& change,
    const std::function<bool()>& keepGoing) {
  sessions_.watch(
      [&](const std::string& key, const std::optional<KvValue>& value) {
        auto phone = decodeKeyToken(key);
        if (!phone) return;  // not a key this code writes
        std::optional<SessionLocation> where;
        if (value) where = locationFrom(*value);  // released: node empty, lastNode set
        change(*phone, where);
      },
      keepGoing);
}

}  // namespace switchboard::cluster
