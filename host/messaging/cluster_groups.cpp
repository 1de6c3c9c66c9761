// Groups when the host runs with --cluster (docs/cluster.md, "Groups"): the
// group is its sb_groups record, visible and writable from every node.
//
// - Ids come from the cluster counter "group_id", so two nodes never make the
//   same id.
// - A change (create, add, remove, leave) is checked against the record and
//   written over the revision read (again on a conflict), on the link's worker
//   thread; the refusals are those of a single node, word for word.
// - sb_member_groups indexes the groups of each phone, for listing. It is
//   written after the record, so it may name a group the phone has left: the
//   record decides.
// - Each node keeps a copy of a group in its store, which the single-node code
//   (membership checks, fan-out, listing) reads. Every use brings the copy up
//   to date with the record first: one KV read per group send, and a store
//   write only when the record's revision moved.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "store/store.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::messaging {

namespace {

// A refusal thrown on the worker: onClusterWorker turns it into the same
// rejection refuse() makes on a network thread.
[[noreturn]] void refuseOnWorker(const std::string& message) {
  throw std::runtime_error(message);
}

bool isMember(const cluster::GroupEntry& group, const std::string& phone) {
  return std::find(group.members.begin(), group.members.end(), phone) != group.members.end();
}

void requireMemberOf(const std::optional<cluster::GroupEntry>& group, std::uint64_t id,
                     const std::string& phone) {
  if (!group || !isMember(*group, phone)) {
    refuseOnWorker(notAMember(id, phone));
  }
}

}  // namespace

std::optional<cluster::GroupEntry> MessagingService::syncGroupCopy(std::uint64_t id) {
  auto group = cluster_->directory().group(std::to_string(id));
  std::uint64_t revision = group ? group->revision : 0;
  auto synced = syncedGroups_.find(id);
  if (synced != syncedGroups_.end() && synced->second == revision) return group;
  store_.writeAndWait([&](store::Connection& db) {
    auto gid = static_cast<std::int64_t>(id);
    db.prepare("DELETE FROM group_members WHERE group_id = ?").bind(1, gid).run();
    if (!group) {
      db.prepare("DELETE FROM groups WHERE id = ?").bind(1, gid).run();
      return;
    }
    db.prepare(
          "INSERT INTO groups(id, name, owner, created_ms) VALUES (?, ?, ?, ?) "
          "ON CONFLICT(id) DO UPDATE SET name = excluded.name, owner = excluded.owner")
        .bind(1, gid)
        .bind(2, group->name)
        .bind(3, group->owner)
        .bind(4, nowMs())
        .run();
    auto member = db.prepare("INSERT INTO group_members(group_id, member) VALUES (?, ?)");
    for (const std::string& phone : group->members) {
      member.reset();
      member.bind(1, gid).bind(2, phone).run();
    }
  });
  syncedGroups_[id] = revision;
  return group;
}

void MessagingService::requireRegisteredInCluster(const std::vector<std::string>& phones) {
  for (const std::string& phone : phones) {
    if (!isRegistered(phone) && !cluster_->directory().user(phone)) {
      refuseOnWorker("unknown user " + phone);
    }
  }
}

cluster::GroupEntry MessagingService::changeGroupRecord(
    std::uint64_t id, const std::function<void(std::optional<cluster::GroupEntry>&)>& change) {
  cluster::ClusterDirectory& directory = cluster_->directory();
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto group = directory.group(std::to_string(id));
    change(group);  // refuses, or leaves the record to write
    if (directory.writeGroup(*group)) return *group;
  }
  throw std::runtime_error("group " + std::to_string(id) +
                           " kept changing under concurrent writers; retry");
}

kj::Promise<std::uint64_t> MessagingService::createGroupClustered(
    std::string owner, std::string name, std::vector<std::string> members) {
  return onClusterWorker<std::uint64_t>([this, owner, name, members]() {
    requireRegisteredInCluster(members);
    cluster::ClusterDirectory& directory = cluster_->directory();
    std::uint64_t id = directory.allocate("group_id", 1, 1);
    cluster::GroupEntry group{std::to_string(id), name, owner, members, 0};
    group.members.push_back(owner);
    std::sort(group.members.begin(), group.members.end());
    if (!directory.writeGroup(group)) {
      throw std::runtime_error("group id " + group.id + " was taken; retry");
    }
    for (const std::string& member : group.members) directory.addGroupOf(member, group.id);
    syncGroupCopy(id);
    return id;
  });
}

kj::Promise<void> MessagingService::changeGroupClustered(
    std::uint64_t id, std::function<void(std::optional<cluster::GroupEntry>&)> change) {
  return onClusterWorker<bool>([this, id, change = std::move(change)]() {
           std::vector<std::string> before;
           cluster::GroupEntry after = changeGroupRecord(id, [&](auto& group) {
             before = group ? group->members : std::vector<std::string>{};
             change(group);
           });
           cluster::ClusterDirectory& directory = cluster_->directory();
           for (const std::string& member : after.members) {
             if (!std::count(before.begin(), before.end(), member))
               directory.addGroupOf(member, after.id);
           }
           for (const std::string& member : before) {
             if (!isMember(after, member)) directory.removeGroupOf(member, after.id);
           }
           syncGroupCopy(id);
           return true;
         })
      .ignoreResult();
}

kj::Promise<void> MessagingService::addMembersClustered(std::string caller, std::uint64_t id,
                                                        std::vector<std::string> members) {
  return changeGroupClustered(id, [this, caller, id, members](auto& group) {
    requireMemberOf(group, id, caller);
    requireRegisteredInCluster(members);
    for (const std::string& member : members) {
      if (!isMember(*group, member)) group->members.push_back(member);
    }
    if (group->members.size() > proto::MAX_GROUP_MEMBERS) refuseOnWorker(groupTooLarge());
    std::sort(group->members.begin(), group->members.end());
  });
}

kj::Promise<void> MessagingService::removeMembersClustered(std::string caller, std::uint64_t id,
                                                           std::vector<std::string> members) {
  return changeGroupClustered(id, [caller, id, members](auto& group) {
    if (!group) refuseOnWorker("no group " + std::to_string(id));
    if (group->owner != caller) refuseOnWorker(std::string(kOnlyTheCreatorRemoves));
    std::erase_if(group->members, [&](const std::string& member) {
      return std::count(members.begin(), members.end(), member) > 0;
    });
  });
}

kj::Promise<void> MessagingService::leaveGroupClustered(std::string caller, std::uint64_t id) {
  return changeGroupClustered(id, [caller, id](auto& group) {
    requireMemberOf(group, id, caller);
    std::erase(group->members, caller);
  });
}

kj::Promise<void> MessagingService::syncGroup(std::uint64_t id) {
  return onClusterWorker<bool>([this, id]() { return syncGroupCopy(id).has_value(); })
      .ignoreResult();
}

kj::Promise<void> MessagingService::syncGroupsOf(std::string member) {
  return onClusterWorker<bool>([this, member]() {
           // The index names the groups made or joined elsewhere; the copies
           // here may name groups the phone has left since.
           std::vector<std::uint64_t> ids;
           for (const std::string& id : cluster_->directory().groupsOf(member)) {
             ids.push_back(std::stoull(id));
           }
           store_.read([&](store::Connection& db) {
             auto rows =
                 db.prepare("SELECT group_id FROM group_members WHERE member = ?").bind(1, member);
             while (rows.step()) ids.push_back(static_cast<std::uint64_t>(rows.columnInt(0)));
           });
           std::sort(ids.begin(), ids.end());
           ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
           for (std::uint64_t id : ids) syncGroupCopy(id);
           return true;
         })
      .ignoreResult();
}

}  // namespace switchboard::messaging
