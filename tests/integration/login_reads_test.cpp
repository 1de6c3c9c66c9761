// What a login reads, against the real host binary. A login's store reads (the
// key, the first pages of its queues, who watches its presence) share one read
// transaction, renewed after the session is in the session table when a write
// committed meanwhile (session/session_table.h's ordering contract): messages
// stored for a phone while it logs in, again and again, must all reach it.
#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

TEST(LoginReads, MessagesStoredWhileThePhoneLogsInAgainAndAgainAllArriveInOrder) {
  constexpr int kMessages = 200;
  RunningHost host;
  host.start();
  RecordingPhone a(host.clientOptions(), "+15550003001");
  a.registerAndLogin(host.sms());
  const std::string b = "+15550003002";
  std::string bKey = registerAway(host, b);

  // A sends one message at a time (each acknowledged before the next): while B
  // is away each is a store commit, landing between B's logins.
  auto sends = std::async(std::launch::async, [&] {
    for (int i = 0; i < kMessages; ++i) a.client().send(b, "m" + std::to_string(i));
  });
  std::vector<std::vector<std::string>> sessions;
  auto logInOnce = [&](bool last) {
    RecordingPhone phone(host.clientOptions(), b);
    phone.setKey(bKey);
    phone.login();
    phone.client().contacts();  // a round trip: deliveries may be under way
    if (last) {
      // Every message A sent before the fence reached some session by now.
      a.client().send(b, "fence");
      EXPECT_TRUE(phone.waitUntilMessage("fence")) << "the fence never arrived";
    }
    // A keeps sending: what reaches this session up to its end counts as its
    // own. Once logout returned, every delivery the server sent before it has
    // been taken (and recorded) first: calls and returns keep their order.
    phone.client().logout();
    sessions.push_back(bodiesOf(phone.messages()));
  };
  while (sends.wait_for(std::chrono::seconds(0)) != std::future_status::ready) logInOnce(false);
  sends.get();
  logInOnce(true);

  std::set<std::string> received;
  for (const auto& bodies : sessions) {
    int previous = -1;
    for (const std::string& body : bodies) {
      received.insert(body);
      if (body == "fence") continue;
      int index = std::stoi(body.substr(1));
      // Within a session in order; a message whose return was lost by a
      // session that ended may come again in the next one, but not overtaken.
      EXPECT_GT(index, previous) << "out of order within a session: " << body;
      previous = index;
    }
  }
  ASSERT_GE(sessions.size(), 2u);
  std::vector<std::string> missing;
  for (int i = 0; i < kMessages; ++i) {
    if (!received.contains("m" + std::to_string(i))) missing.push_back("m" + std::to_string(i));
  }
  EXPECT_EQ(missing, std::vector<std::string>{}) << "acknowledged messages never arrived";
}

}  // namespace
}  // namespace switchboard::integration
