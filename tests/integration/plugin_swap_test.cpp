// Swapping each plugin to its second build and back while two phones talk, with
// the host in this process (there is no admin RPC yet): no disconnect, and every
// message arrives once, in order.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "host_process.h"
#include "plugin/plugin_manager.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

// Sends numbered messages from one phone to another until stopped; remembers
// the bodies whose sends were acknowledged, in order.
class Chatter {
 public:
  Chatter(RecordingPhone& from, std::string to, std::string prefix)
      : thread_([this, &from, to = std::move(to), prefix = std::move(prefix)] {
          for (int i = 0; !stop_; ++i) {
            std::string body = prefix + std::to_string(i);
            try {
              from.client().send(to, body);
              sent_.push_back(body);
            } catch (const std::exception& e) {
              errors_.push_back(e.what());
              return;
            }
          }
        }) {}
  ~Chatter() { finish(); }
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<std::string>& sent() const { return sent_; }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::string> sent_;    // read after finish()
  std::vector<std::string> errors_;  // read after finish()
  std::thread thread_;
};

TEST(PluginSwap, EachPluginSwapsAndRollsBackUnderTrafficWithoutLossOrDisconnect) {
  TempDir dir;
  SmsFile sms(dir.path());
  HostConfig config;
  config.listen = "127.0.0.1:0";
  config.dataDir = dir.path() / "data";
  config.pluginDir = SWITCHBOARD_PLUGIN_DIR;
  config.threads = 2;
  config.smsCommand = sms.script().string();
  config.logLevel = "warn";
  config.adminSocket = dir.path() / "admin.sock";  // never the working directory's
  config.metricsListen.clear();                    // never the fixed default port
  HostProcess host(config);

  client::ClientOptions options;
  options.endpoint = host.clientEndpoint();
  RecordingPhone a(options, "+15550000301");
  RecordingPhone b(options, "+15550000302");
  a.registerAndLogin(sms);
  b.registerAndLogin(sms);
  a.client().addContacts({b.number()});
  b.client().addContacts({a.number()});

  std::vector<std::string> swaps;
  {
    Chatter aToB(a, b.number(), "a");
    Chatter bToA(b, a.number(), "b");
    ASSERT_TRUE(waitUntil([&] { return b.messages().size() > 20 && a.messages().size() > 20; }));
    for (const char* kind : {"routing", "auth", "presence", "offline"}) {
      auto parsed = plugin::parseKind(kind);
      ASSERT_TRUE(parsed);
      std::filesystem::path next = std::filesystem::path(SWITCHBOARD_PLUGIN_DIR) / kind /
                                   ("lib" + std::string(kind) + "-next.so");
      std::size_t before = b.messages().size();
      plugin::OperationResult up = host.plugins().load(*parsed, next, "integration test");
      ASSERT_TRUE(up.ok) << kind << ": " << up.error;
      EXPECT_EQ(up.toVersion, "1.1.0") << kind;
      // Traffic flows on the new version before it is rolled back.
      ASSERT_TRUE(waitUntil([&] { return b.messages().size() > before + 20; })) << kind;
      a.client().typing(b.number(), true);  // presence and auth paths exercised too
      plugin::OperationResult down =
          host.plugins().rollback(*parsed, std::nullopt, "integration test");
      ASSERT_TRUE(down.ok) << kind << ": " << down.error;
      EXPECT_EQ(down.toVersion, "1.0.0") << kind;
      swaps.push_back(std::string(kind) + " " + up.fromVersion + "->" + up.toVersion + "->" +
                      down.toVersion);
    }
    aToB.finish();
    bToA.finish();
    EXPECT_TRUE(aToB.errors().empty()) << aToB.errors().front();
    EXPECT_TRUE(bToA.errors().empty()) << bToA.errors().front();

    ASSERT_TRUE(b.waitForMessages(aToB.sent().size()));
    ASSERT_TRUE(a.waitForMessages(bToA.sent().size()));
    // Fences: anything duplicated would arrive before these.
    a.client().send(b.number(), "fence");
    b.client().send(a.number(), "fence");
    ASSERT_TRUE(b.waitForMessages(aToB.sent().size() + 1));
    ASSERT_TRUE(a.waitForMessages(bToA.sent().size() + 1));
    auto expectB = aToB.sent();
    expectB.push_back("fence");
    auto expectA = bToA.sent();
    expectA.push_back("fence");
    EXPECT_EQ(bodiesOf(b.messages()), expectB);
    EXPECT_EQ(bodiesOf(a.messages()), expectA);
  }
  EXPECT_EQ(swaps.size(), 4u);
  EXPECT_EQ(a.disconnects(), 0u);
  EXPECT_EQ(b.disconnects(), 0u);
  EXPECT_TRUE(a.kicks().empty());
  EXPECT_TRUE(b.kicks().empty());
  // A new registration and login still work on the rolled-back versions.
  RecordingPhone c(options, "+15550000303");
  c.registerAndLogin(sms);
  std::size_t seen = a.messages().size();
  c.client().send(a.number(), "after the swaps");
  ASSERT_TRUE(a.waitForMessages(seen + 1));
  EXPECT_EQ(a.messages().back().body, "after the swaps");
}

}  // namespace
}  // namespace switchboard::integration
