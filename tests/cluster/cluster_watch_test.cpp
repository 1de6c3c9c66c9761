// What every node learns by watching the directory (docs/cluster.md), with two
// real host processes and a real nats-server: a session whose phone logged in
// elsewhere is closed even when no kick notice reaches its node, and a contact
// removed on one node is gone from the other node's copy of the list.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/cluster_directory.h"
#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "nats_server.h"
#include "recording_phone.h"
#include "running_host.h"
#include "two_node_cluster.h"

namespace switchboard::integration {
namespace {

class ClusterWatch : public TwoNodeCluster {
 protected:
  // Runs `write` against the cluster's directory from a NATS connection of
  // its own (standing in for another node), once `phone`'s login on a has
  // claimed it, so what `write` claims replaces that claim rather than racing it.
  void asAnotherNode(const RecordingPhone& phone,
                     const std::function<void(cluster::ClusterDirectory&)>& write) {
    withOwnLink("other-node", [&](cluster::NatsLink& link) {
      cluster::ClusterDirectory directory(link);
      ASSERT_TRUE(waitUntil([&] {
        auto where = directory.location(phone.number());
        return where && where->node == "a";
      }));
      write(directory);
    });
  }

  // Waits for a to close `phone`'s session; the kick reasons it was told.
  std::vector<std::string> kicksOnceClosed(RecordingPhone& phone) {
    EXPECT_TRUE(waitUntil([&] { return !phone.kicks().empty() && !phone.client().isLoggedIn(); }))
        << "the session on node a was not closed\n"
        << a->log();
    return phone.kicks();
  }
};

// The claim a node makes at a login, written straight into sb_sessions: what
// node b would have written for a login whose kick notice to a was lost.
TEST_F(ClusterWatch, ALoginElsewhereWhoseKickNoticeIsLostStillClosesTheOldSession) {
  RecordingPhone phone(a->clientOptions(), "+15550009301");
  phone.registerAndLogin(a->sms());

  asAnotherNode(phone, [&](cluster::ClusterDirectory& directory) {
    cluster::SessionLocation elsewhere{"b", 4242, cluster::wallClockMs() + 1, 0};
    ASSERT_TRUE(directory.claim(phone.number(), elsewhere));
  });
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(kicksOnceClosed(phone), std::vector<std::string>{"logged in elsewhere"});
  EXPECT_NE(a->log().find("logged in on b; closing its session"), std::string::npos) << a->log();
}

// A new device verified on b writes the phone's user (a new key) and then its
// login claims the phone; b's "replaced by a new device" notice is sent before
// both, but a handles it on its listener thread and the watch on a thread of
// its own, so on a busy node the watch may come first (seen once as a failure
// of ClusterMessaging.ANewDeviceOnBReplacesTheDeviceOnAEverywhere in a parallel
// run). Here the notice never comes: the watch closes the session, naming the
// new device, because the cluster's key is no longer the one a's copy holds.
TEST_F(ClusterWatch, ANewDeviceElsewhereWhoseNoticeComesAfterItsLoginIsNamedAsTheReason) {
  RecordingPhone phone(a->clientOptions(), "+15550009302");
  phone.registerAndLogin(a->sms());

  asAnotherNode(phone, [&](cluster::ClusterDirectory& directory) {
    auto user = directory.user(phone.number());
    ASSERT_TRUE(user);
    user->keyHash = std::string(user->keyHash.size(), '\x5a');
    user->deviceName = "new device on b";
    ASSERT_TRUE(directory.writeUser(*user));
    cluster::SessionLocation elsewhere{"b", 4243, cluster::wallClockMs() + 1, 0};
    ASSERT_TRUE(directory.claim(phone.number(), elsewhere));
  });
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(kicksOnceClosed(phone), std::vector<std::string>{"replaced by a new device"});
}

bool sawPresence(const RecordingPhone& watcher, const std::string& phone,
                 client::PresenceState state) {
  for (const auto& update : watcher.presence()) {
    if (update.phone == phone && update.state == state && !update.typing) return true;
  }
  return false;
}

std::optional<client::Contact> contactIn(RecordingPhone& owner, const std::string& phone) {
  for (const auto& contact : owner.client().contacts()) {
    if (contact.phone == phone) return contact;
  }
  return std::nullopt;
}

TEST_F(ClusterWatch, AContactRemovedOnOneNodeIsRemovedFromTheOtherNodesCopy) {
  // Alice and Bob are each other's contacts, made on b; Carol is Bob's too.
  auto alice = std::make_unique<RecordingPhone>(b->clientOptions(), "+15550009311");
  RecordingPhone bob(b->clientOptions(), "+15550009312");
  RecordingPhone carol(b->clientOptions(), "+15550009313");
  alice->registerAndLogin(b->sms());
  bob.registerAndLogin(b->sms());
  carol.registerAndLogin(b->sms());
  alice->client().addContacts({bob.number()});
  bob.client().addContacts({alice->number(), carol.number()});
  carol.client().addContacts({bob.number()});
  std::string aliceKey = alice->key();

  // Alice moves to a, where her list comes with her, and removes Bob there.
  RecordingPhone aliceOnA(a->clientOptions(), alice->number());
  aliceOnA.setKey(aliceKey);
  aliceOnA.login();
  ASSERT_TRUE(waitUntil([&] { return !alice->client().isLoggedIn(); }));
  alice.reset();
  ASSERT_TRUE(waitUntil([&] { return contactIn(aliceOnA, bob.number()).has_value(); }));
  // While they are mutual, Bob's listing on b shows when Alice was last seen.
  ASSERT_TRUE(waitUntil([&] {
    auto seen = contactIn(bob, aliceOnA.number());
    return seen && seen->lastSeen != 0;
  })) << "bob on b never saw alice's last seen";
  aliceOnA.client().removeContacts({bob.number()});
  EXPECT_FALSE(contactIn(aliceOnA, bob.number()).has_value());

  // On b, without Alice coming back: Bob's listing no longer shows her last
  // seen (not mutual now), though she stays his contact.
  ASSERT_TRUE(waitUntil([&] {
    auto seen = contactIn(bob, aliceOnA.number());
    return seen && seen->lastSeen == 0;
  })) << "node b still has bob in alice's list\n"
      << b->log();

  // Alice back on b: her list there has no Bob, and her presence is not
  // shared with him. Carol's change after hers is the fence: Bob's session
  // is told in order, so once he has Carol's he would have had Alice's.
  aliceOnA.client().logout();
  RecordingPhone aliceBack(b->clientOptions(), aliceOnA.number());
  aliceBack.setKey(aliceKey);
  aliceBack.login();
  EXPECT_TRUE(aliceBack.client().contacts().empty());
  aliceBack.client().setPresence(client::PresenceState::away);
  carol.client().setPresence(client::PresenceState::away);
  ASSERT_TRUE(
      waitUntil([&] { return sawPresence(bob, carol.number(), client::PresenceState::away); }));
  EXPECT_FALSE(sawPresence(bob, aliceBack.number(), client::PresenceState::away));
}

}  // namespace
}  // namespace switchboard::integration
