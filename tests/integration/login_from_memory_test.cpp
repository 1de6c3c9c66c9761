// A login that reads nothing, against the real host binary. On a single node a
// phone whose key is remembered, for whom nothing waits in the store
// (messaging/stored_rows.h) and who is nobody's contact
// (messaging/watched_phones.h) logs in without a store read. These tests hold
// what that must not break: messages stored while the phone logs in reach it,
// and after a restart (SIGKILL) what waits in the data dir, messages, receipts
// and contacts, is read again.
#include <gtest/gtest.h>

#include <future>
#include <string>
#include <vector>

#include "recording_phone.h"
#include "running_host.h"
#include "test_support.h"

namespace switchboard::integration {
namespace {

using client::ReceiptKind;

// A logged-in phone with a known key.
std::unique_ptr<RecordingPhone> loggedIn(const RunningHost& host, const std::string& number,
                                         const std::string& key) {
  auto phone = std::make_unique<RecordingPhone>(host.clientOptions(), number);
  phone->setKey(key);
  phone->login();
  return phone;
}

// Each phone has nothing stored when it logs in; a message to it is sent just
// before, so it lands in the store before the login, or while the session
// starts, or in memory after: wherever, it must arrive, exactly once.
TEST(LoginFromMemory, AMessageSentWhileAPhoneWithNothingStoredLogsInArrivesOnce) {
  constexpr int kPhones = 30;
  RunningHost host({"--plugin-setting", "auth.max-requests-per-peer=1000"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550004000");
  a.registerAndLogin(host.sms());
  for (int i = 0; i < kPhones; ++i) {
    const std::string number = "+1555000410" + std::to_string(10 + i);
    std::string key = registerAway(host, number);
    auto sent = a.client().sendAsync(number, "x");
    auto phone = loggedIn(host, number, key);
    sent.get();
    a.client().send(number, "fence");
    ASSERT_TRUE(phone->waitUntilMessage("fence")) << number;
    EXPECT_EQ(bodiesOf(phone->messages()), (std::vector<std::string>{"x", "fence"})) << number;
  }
}

// Messages and receipts waiting in the data dir when the host is killed are
// counted again at start: the next logins read and deliver them.
TEST(LoginFromMemory, WhatWaitsInTheStoreWhenTheHostIsKilledArrivesAtTheNextLogin) {
  RunningHost host;
  host.start();
  const std::string a = "+15550004201";
  const std::string b = "+15550004202";
  const std::string c = "+15550004203";
  std::string aKey = registerAway(host, a);
  std::string bKey = registerAway(host, b);
  std::string cKey = registerAway(host, c);

  std::uint64_t m0 = 0;
  {
    auto pa = loggedIn(host, a, aKey);
    m0 = pa->client().send(b, "m0").id;  // B is away: stored
    pa->client().logout();
  }
  {
    // B takes m0 and reads it while A is away: A's ticks are stored.
    auto pb = loggedIn(host, b, bKey);
    ASSERT_TRUE(pb->waitForMessages(1));
    EXPECT_EQ(bodiesOf(pb->messages()), (std::vector<std::string>{"m0"}));
    pb->client().receipt({m0}, ReceiptKind::read);  // resolves once durable
    pb->client().logout();
  }
  {
    auto pc = loggedIn(host, c, cKey);
    pc->client().send(b, "m1");  // B is away: stored, acknowledged once durable
    pc->client().logout();
  }
  host.kill9();
  host.start();

  // A first: once B takes m1, nothing more is stored for A.
  auto pa = loggedIn(host, a, aKey);
  ASSERT_TRUE(pa->waitForReceipt(m0, ReceiptKind::read))
      << "a read tick stored before the kill never arrived";
  auto pb = loggedIn(host, b, bKey);
  ASSERT_TRUE(pb->waitUntilMessage("m1")) << "a message stored before the kill never arrived";
  // Nothing taken before the kill comes back: the fence comes after m1 alone.
  pa->client().send(b, "fence");
  ASSERT_TRUE(pb->waitUntilMessage("fence"));
  EXPECT_EQ(bodiesOf(pb->messages()), (std::vector<std::string>{"m1", "fence"}));
}

// Mutual contacts made before a restart still see each other come online after
// it: the phones the contacts table names are read again at start.
TEST(LoginFromMemory, ContactsMadeBeforeARestartStillSeeEachOtherComeOnline) {
  RunningHost host;
  host.start();
  const std::string w = "+15550004301";
  const std::string p = "+15550004302";
  std::string wKey = registerAway(host, w);
  std::string pKey = registerAway(host, p);
  loggedIn(host, w, wKey)->client().addContacts({p});
  loggedIn(host, p, pKey)->client().addContacts({w});
  host.kill9();
  host.start();

  auto watcher = loggedIn(host, w, wKey);
  auto phone = loggedIn(host, p, pKey);
  ASSERT_TRUE(waitUntil([&] {
    for (const auto& u : watcher->presence()) {
      if (u.phone == p && u.state == client::PresenceState::online) return true;
    }
    return false;
  })) << "the watcher never heard its contact come online";
}

}  // namespace
}  // namespace switchboard::integration
