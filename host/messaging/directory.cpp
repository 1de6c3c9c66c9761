// The directory: users, contacts and groups, kept in the store.

#include <set>

#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using session::PresenceState;

namespace {

std::vector<std::string> distinct(std::vector<std::string> phones) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (std::string& p : phones) {
    if (seen.insert(p).second) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

kj::Promise<void> MessagingService::addContacts(const std::string& owner,
                                                std::vector<std::string> phones) {
  requireBatch(phones.size(), "phones");
  for (const std::string& p : phones) requirePhone(p, "contact");
  phones = distinct(std::move(phones));
  std::erase(phones, owner);
  watched_.add(phones);  // before the rows exist (watched_phones.h)
  auto write = [this, owner, phones]() {
    std::int64_t now = nowMs();
    return writeDurably(store_, [owner, phones, now](store::Connection& db) {
      auto insert =
          db.prepare("INSERT OR IGNORE INTO contacts(owner, contact, added_ms) VALUES (?, ?, ?)");
      for (const std::string& p : phones) {
        insert.reset();
        insert.bind(1, owner).bind(2, p).bind(3, now).run();
      }
    });
  };
  // In a cluster the list in sb_contacts comes first: every node copies it.
  if (cluster_) return writeContactsThrough(owner, phones, true).then(kj::mv(write));
  return write();
}

kj::Promise<void> MessagingService::removeContacts(const std::string& owner,
                                                   std::vector<std::string> phones) {
  requireBatch(phones.size(), "phones");
  for (const std::string& p : phones) requirePhone(p, "contact");
  auto write = [this, owner, phones]() {
    return writeDurably(store_, [owner, phones](store::Connection& db) {
      runForEach(db, "DELETE FROM contacts WHERE owner = ? AND contact = ?", owner, phones);
    });
  };
  if (cluster_) return writeContactsThrough(owner, phones, false).then(kj::mv(write));
  return write();
}

std::vector<ContactView> MessagingService::contacts(const std::string& owner) {
  std::vector<ContactView> out;
  std::vector<bool> mutual;  // the contact has the owner as a contact too
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(
                      "SELECT c.contact, u.phone IS NOT NULL, COALESCE(u.last_seen_ms, 0), "
                      "EXISTS(SELECT 1 FROM contacts m WHERE m.owner = c.contact "
                      "AND m.contact = c.owner) "
                      "FROM contacts c LEFT JOIN users u ON u.phone = c.contact "
                      "WHERE c.owner = ? ORDER BY c.contact")
                    .bind(1, owner);
    while (rows.step()) {
      out.push_back(ContactView{rows.columnText(0), rows.columnInt(1) != 0, PresenceState::offline,
                                rows.columnInt(2)});
      mutual.push_back(rows.columnInt(3) != 0);
    }
  });
  for (std::size_t i = 0; i < out.size(); ++i) {
    ContactView& contact = out[i];
    // The owner watches the contact, and has it as a contact by construction.
    if (!contact.registered || !presencePolicy(contact.phone, owner, true, mutual[i])) {
      contact.lastSeen = 0;
      continue;
    }
    if (auto ref = sessions_.find(contact.phone)) {
      contact.state = static_cast<PresenceState>(ref->gauges->presence.load());
    }
  }
  return out;
}

// ---------------------------------------------------------------- groups

std::optional<std::string> MessagingService::phoneOfNumber(std::uint64_t number) {
  if (auto known = knownUsers_.phoneOf(number)) return known;
  std::optional<std::string> phone;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT phone FROM users WHERE number = ?")
                   .bind(1, static_cast<std::int64_t>(number));
    if (row.step()) phone = row.columnText(0);
  });
  if (phone) knownUsers_.remember(*phone, number);
  return phone;
}

bool MessagingService::isRegistered(const std::string& phone) {
  if (knownUsers_.numberOf(phone)) return true;
  std::optional<std::uint64_t> number;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT number FROM users WHERE phone = ?").bind(1, phone);
    if (row.step()) number = static_cast<std::uint64_t>(row.columnInt(0));
  });
  if (number && *number != 0) knownUsers_.remember(phone, *number);
  return number.has_value();
}

void MessagingService::forgetUser(const std::string& phone) {
  knownUsers_.forget(phone);
}

void MessagingService::requireRegistered(const std::vector<std::string>& phones) {
  for (const std::string& p : phones) {
    requirePhone(p, "member");
    if (!isRegistered(p)) refuse("unknown user " + p);
  }
}

std::vector<std::string> MessagingService::membersOf(std::uint64_t group) {
  std::vector<std::string> members;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare("SELECT member FROM group_members WHERE group_id = ? ORDER BY member")
                    .bind(1, static_cast<std::int64_t>(group));
    while (rows.step()) members.push_back(rows.columnText(0));
  });
  return members;
}

void MessagingService::requireMember(const std::string& phone, std::uint64_t group) {
  bool member = false;
  store_.read([&](store::Connection& db) {
    member = db.prepare("SELECT 1 FROM group_members WHERE group_id = ? AND member = ?")
                 .bind(1, static_cast<std::int64_t>(group))
                 .bind(2, phone)
                 .step();
  });
  if (!member) refuse(notAMember(group, phone));
}

kj::Promise<std::uint64_t> MessagingService::createGroup(const std::string& owner, std::string name,
                                                         std::vector<std::string> members) {
  requireName(name, "group name");
  members = distinct(std::move(members));
  std::erase(members, owner);
  if (members.size() + 1 > proto::MAX_GROUP_MEMBERS) {
    refuse(groupTooLarge());
  }
  if (cluster_) {
    for (const std::string& p : members) requirePhone(p, "member");
    return createGroupClustered(owner, std::move(name), std::move(members));
  }
  requireRegistered(members);
  members.push_back(owner);
  std::int64_t now = nowMs();
  return writeDurably<std::uint64_t>(store_, [owner, name, members, now](store::Connection& db) {
    db.prepare("INSERT INTO groups(name, owner, created_ms) VALUES (?, ?, ?)")
        .bind(1, name)
        .bind(2, owner)
        .bind(3, now)
        .run();
    auto id = db.lastInsertRowid();
    runForEach(db, "INSERT INTO group_members(group_id, member) VALUES (?, ?)", id, members);
    return static_cast<std::uint64_t>(id);
  });
}

kj::Promise<void> MessagingService::addMembers(const std::string& caller, std::uint64_t group,
                                               std::vector<std::string> members) {
  requireBatch(members.size(), "members");
  members = distinct(std::move(members));
  if (cluster_) {
    for (const std::string& p : members) requirePhone(p, "member");
    return addMembersClustered(caller, group, std::move(members));
  }
  requireMember(caller, group);
  requireRegistered(members);
  auto gid = static_cast<std::int64_t>(group);
  return writeDurably(store_, [gid, members](store::Connection& db) {
    runForEach(db, "INSERT OR IGNORE INTO group_members(group_id, member) VALUES (?, ?)", gid,
               members);
    auto count = db.prepare("SELECT count(*) FROM group_members WHERE group_id = ?").bind(1, gid);
    count.step();
    if (static_cast<std::uint64_t>(count.columnInt(0)) > proto::MAX_GROUP_MEMBERS) {
      throw std::runtime_error(groupTooLarge());
    }
  });
}

kj::Promise<void> MessagingService::removeMembers(const std::string& caller, std::uint64_t group,
                                                  std::vector<std::string> members) {
  requireBatch(members.size(), "members");
  if (cluster_) return removeMembersClustered(caller, group, std::move(members));
  auto gid = static_cast<std::int64_t>(group);
  std::optional<std::string> owner;
  store_.read([&](store::Connection& db) {
    auto row = db.prepare("SELECT owner FROM groups WHERE id = ?").bind(1, gid);
    if (row.step()) owner = row.columnText(0);
  });
  if (!owner) refuse("no group " + std::to_string(group));
  if (*owner != caller) refuse(kOnlyTheCreatorRemoves);
  return writeDurably(store_, [gid, members](store::Connection& db) {
    runForEach(db, "DELETE FROM group_members WHERE group_id = ? AND member = ?", gid, members);
  });
}

kj::Promise<void> MessagingService::leaveGroup(const std::string& caller, std::uint64_t group) {
  if (cluster_) return leaveGroupClustered(caller, group);
  requireMember(caller, group);
  auto gid = static_cast<std::int64_t>(group);
  return writeDurably(store_, [gid, caller](store::Connection& db) {
    runForEach(db, "DELETE FROM group_members WHERE group_id = ? AND member = ?", gid,
               std::vector<std::string>{caller});
  });
}

kj::Promise<std::vector<GroupView>> MessagingService::groups(const std::string& member) {
  // In a cluster the store's copies are brought up to date first.
  kj::Promise<void> fresh = cluster_ ? syncGroupsOf(member) : kj::Promise<void>(kj::READY_NOW);
  return fresh.then([this, member]() {
    std::vector<GroupView> out;
    store_.read([&](store::Connection& db) {
      auto rows = db.prepare(
                        "SELECT g.id, g.name, g.owner FROM groups g JOIN group_members m "
                        "ON m.group_id = g.id WHERE m.member = ? ORDER BY g.id")
                      .bind(1, member);
      while (rows.step()) {
        out.push_back(GroupView{static_cast<std::uint64_t>(rows.columnInt(0)),
                                rows.columnText(1),
                                rows.columnText(2),
                                {}});
      }
    });
    for (GroupView& g : out) g.members = membersOf(g.id);
    return out;
  });
}

}  // namespace switchboard::messaging
