// Expiry of queued messages on the host side, against the real host binary:
// the offline plugin's ttl is what the host stores, a message past its expiry
// is never delivered (the paging filter), and the sweep deletes its row.
//
// Time passing is simulated by moving rows' expires_ms into the past through a
// second SQLite connection (the plugin's smallest ttl is a minute).
#include <gtest/gtest.h>

#include <chrono>

#include "database_file.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

std::int64_t wallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST(MessageExpiry, TheOfflineTtlIsStoredAndExpiredMessagesAreNeverDeliveredThenSwept) {
  RunningHost host({"--plugin-setting", "offline.ttl-seconds=3600"});
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550000701");
  RecordingPhone b(host.clientOptions(), "+15550000702");
  a.registerAndLogin(host.sms());
  b.setKey(registerPhone(b.client(), host.sms(), b.number()));  // offline

  std::int64_t before = wallNowMs();
  std::vector<client::SendResult> sent;
  for (const char* body : {"stale 1", "stale 2", "fresh"}) {
    sent.push_back(a.client().send(b.number(), body));
  }
  std::int64_t after = wallNowMs();

  DatabaseFile db(host.dataDir());
  for (const auto& s : sent) {
    auto expires =
        db.integer("SELECT expires_ms FROM queue WHERE id = ?", {static_cast<std::int64_t>(s.id)});
    EXPECT_GE(expires, before + 3600 * 1000) << s.id;
    EXPECT_LE(expires, after + 3600 * 1000) << s.id;
  }

  // The first two expire (as if an hour had passed for them).
  std::int64_t past = wallNowMs() - 1000;
  ASSERT_EQ(db.execute("UPDATE queue SET expires_ms = ? WHERE id IN (?, ?)",
                       {past, static_cast<std::int64_t>(sent[0].id),
                        static_cast<std::int64_t>(sent[1].id)}),
            2);

  b.login();
  a.client().send(b.number(), "fence");
  ASSERT_TRUE(b.waitForMessages(2));
  EXPECT_EQ(bodiesOf(b.messages()), (std::vector<std::string>{"fresh", "fence"}));
  for (const auto& m : b.messages()) {
    EXPECT_NE(m.id, sent[0].id);
    EXPECT_NE(m.id, sent[1].id);
  }

  // A restart runs the sweep at once: the expired rows are gone, the fresh one
  // was never swept early.
  host.stop();
  host.start();
  ASSERT_TRUE(waitUntil([&] {
    return db.integer(
               "SELECT count(*) FROM queue WHERE id IN (?, ?)",
               {static_cast<std::int64_t>(sent[0].id), static_cast<std::int64_t>(sent[1].id)}) == 0;
  })) << "the sweep left expired rows";

  // b, back online after the restart, still gets nothing of them.
  ASSERT_TRUE(waitUntil([&] { return a.client().isLoggedIn() && b.client().isLoggedIn(); }));
  a.client().send(b.number(), "second fence");
  ASSERT_TRUE(b.waitForMessages(3));
  EXPECT_EQ(bodiesOf(b.messages()), (std::vector<std::string>{"fresh", "fence", "second fence"}));
}

}  // namespace
}  // namespace switchboard::integration
