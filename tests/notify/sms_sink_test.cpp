// The SMS sinks: the dev outbox, and the command sink running real programs.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "notify/sms_sink.h"
#include "wait_until.h"

namespace switchboard::notify {
namespace {

using testing::waitUntil;
namespace fs = std::filesystem;

// A scratch directory (tests/support) that can also hold shell scripts.
class TempDir : public switchboard::testing::TempDir {
 public:
  // Writes an executable shell script and returns its path.
  fs::path script(const std::string& name, const std::string& body) const {
    fs::path file = path() / name;
    std::ofstream(file) << "#!/bin/sh\n" << body;
    fs::permissions(file, fs::perms::owner_all);
    return file;
  }
};

std::string readFile(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(DevSmsSink, OutboxIsNewestFirstFilteredAndLimited) {
  DevSmsSink sink;
  sink.send("+15550000001", "11111", "code 11111");
  sink.send("+15550000002", "22222", "code 22222");
  sink.send("+15550000001", "33333", "code 33333");

  auto all = sink.outbox();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].code, "33333");
  EXPECT_EQ(all[1].code, "22222");
  EXPECT_EQ(all[2].code, "11111");
  EXPECT_EQ(all[0].outcome, "logged");
  EXPECT_GE(all[0].atMs, all[2].atMs);
  EXPECT_GT(all[0].atMs, 0);

  auto one = sink.outbox(std::string("+15550000001"));
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[0].code, "33333");
  EXPECT_EQ(one[0].text, "code 33333");
  EXPECT_EQ(one[1].code, "11111");

  auto limited = sink.outbox(std::nullopt, 1);
  ASSERT_EQ(limited.size(), 1u);
  EXPECT_EQ(limited[0].code, "33333");
  EXPECT_TRUE(sink.outbox(std::string("+15559999999")).empty());
  EXPECT_EQ(sink.stats().sent, 3u);
}

TEST(DevSmsSink, OutboxForgetsTheOldestBeyondCapacity) {
  DevSmsSink sink(3);
  for (int i = 0; i < 5; ++i) sink.send("+15550000001", std::to_string(i), "t");
  auto all = sink.outbox();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].code, "4");
  EXPECT_EQ(all[2].code, "2");
}

TEST(CommandSmsSink, RunsTheCommandWithPhoneCodeAndText) {
  TempDir dir;
  fs::path log = dir.path() / "sent.log";
  auto script =
      dir.script("send-sms", "echo \"$1 $2 $SWITCHBOARD_SMS_TEXT\" >> '" + log.string() + "'\n");
  CommandSmsSink sink({script.string()});
  sink.send("+15551234567", "12345", "Your Switchboard code is 12345");
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 1; }));
  EXPECT_EQ(readFile(log), "+15551234567 12345 Your Switchboard code is 12345\n");

  auto outbox = sink.outbox();
  ASSERT_EQ(outbox.size(), 1u);
  EXPECT_EQ(outbox[0].phone, "+15551234567");
  EXPECT_EQ(outbox[0].code, "*****");
  EXPECT_EQ(outbox[0].text, "Your Switchboard code is *****");
  EXPECT_EQ(outbox[0].outcome, "sent");
}

TEST(CommandSmsSink, ExtraArgumentsComeFirst) {
  TempDir dir;
  fs::path log = dir.path() / "sent.log";
  auto script = dir.script("send-sms", "echo \"$@\" >> '" + log.string() + "'\n");
  CommandSmsSink sink({"/bin/sh", script.string(), "--gateway=test"});
  sink.send("+15551234567", "54321", "text");
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 1; }));
  EXPECT_EQ(readFile(log), "--gateway=test +15551234567 54321\n");
}

TEST(CommandSmsSink, FailingCommandIsCountedWithItsStderr) {
  TempDir dir;
  auto script = dir.script("send-sms", "echo 'gateway says no to' \"$2\" >&2\nexit 3\n");
  CommandSmsSink sink({script.string()});
  sink.send("+15551234567", "12345", "code 12345");
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 1; }));
  EXPECT_EQ(sink.stats().sent, 0u);
  EXPECT_EQ(sink.stats().dropped, 0u);
  auto outbox = sink.outbox();
  ASSERT_EQ(outbox.size(), 1u);
  EXPECT_EQ(outbox[0].outcome, "failed: exit status 3: gateway says no to *****");
}

TEST(CommandSmsSink, MissingProgramIsCountedAsFailed) {
  TempDir dir;
  CommandSmsSink sink({(dir.path() / "no-such-program").string()});
  sink.send("+15551234567", "12345", "code");
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 1; }));
  EXPECT_NE(sink.outbox()[0].outcome.find("could not start"), std::string::npos);
}

TEST(CommandSmsSink, HangingCommandIsKilledAtTheTimeout) {
  TempDir dir;
  // The sleep is a child of the script: killing the process group must reach it too,
  // or its open stderr would keep the sink waiting.
  auto hanging = dir.script("hang", "sleep 600\n");
  CommandSmsOptions options;
  options.timeout = std::chrono::milliseconds(200);
  CommandSmsSink sink({hanging.string()}, options);
  sink.send("+15551234567", "12345", "code");
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 1; }));
  auto outbox = sink.outbox();
  ASSERT_EQ(outbox.size(), 1u);
  EXPECT_NE(outbox[0].outcome.find("timed out"), std::string::npos) << outbox[0].outcome;
}

TEST(CommandSmsSink, FullQueueDropsAndCountsAFailure) {
  TempDir dir;
  fs::path started = dir.path() / "started";
  fs::path gate = dir.path() / "gate";
  // The first run holds the worker until the test opens the gate.
  auto script = dir.script("send-sms", "touch '" + started.string() + "'\nwhile [ ! -e '" +
                                           gate.string() + "' ]; do sleep 0.01; done\n");
  CommandSmsOptions options;
  options.queueCapacity = 1;
  CommandSmsSink sink({script.string()}, options);
  sink.send("+15550000001", "11111", "first");
  ASSERT_TRUE(waitUntil([&] { return fs::exists(started); }));
  sink.send("+15550000002", "22222", "second");  // waits in the queue
  sink.send("+15550000003", "33333", "third");   // dropped
  EXPECT_EQ(sink.stats().dropped, 1u);
  EXPECT_EQ(sink.stats().failed, 1u);
  std::ofstream(gate) << "open";
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 2; }));
  auto dropped = sink.outbox(std::string("+15550000003"));
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].outcome.rfind("dropped: queue full", 0), 0u) << dropped[0].outcome;
}

TEST(CommandSmsSink, RefusesArgumentsThatLookLikeOptions) {
  TempDir dir;
  fs::path log = dir.path() / "sent.log";
  auto script = dir.script("send-sms", "echo \"$@\" >> '" + log.string() + "'\n");
  CommandSmsSink sink({script.string()});
  sink.send("--config=/etc/passwd", "12345", "text");
  sink.send("+15551234567", "-1", "text");
  EXPECT_EQ(sink.stats().dropped, 2u);
  EXPECT_EQ(sink.stats().failed, 2u);
  EXPECT_FALSE(fs::exists(log));
}

TEST(CommandSmsSink, DestructorRunsWhatIsQueued) {
  TempDir dir;
  fs::path log = dir.path() / "sent.log";
  auto script = dir.script("send-sms", "echo \"$1\" >> '" + log.string() + "'\n");
  {
    CommandSmsOptions options;
    options.shutdownBound = std::chrono::seconds(10);  // a failure guard, not a measurement
    CommandSmsSink sink({script.string()}, options);
    for (int i = 0; i < 5; ++i) sink.send("+1555000000" + std::to_string(i), "12345", "t");
  }
  EXPECT_EQ(readFile(log),
            "+15550000000\n+15550000001\n+15550000002\n+15550000003\n+15550000004\n");
}

TEST(CommandSmsSink, DestructorIsBoundedByTimeoutAndShutdownBound) {
  TempDir dir;
  fs::path log = dir.path() / "sent.log";
  fs::path started = dir.path() / "started";
  // Never finishes: only the time-out ends it.
  auto script = dir.script("send-sms", "echo \"$1\" >> '" + log.string() + "'\ntouch '" +
                                           started.string() + "'\nsleep 600\n");
  {
    CommandSmsOptions options;
    // The destructor must come while the first command still runs (else the worker starts
    // the second): 200 ms was not always enough on a loaded box, so the bound is 2 s.
    options.timeout = std::chrono::milliseconds(2000);
    options.shutdownBound = std::chrono::milliseconds(0);
    CommandSmsSink sink({script.string()}, options);
    sink.send("+15550000001", "11111", "t");
    ASSERT_TRUE(waitUntil([&] { return fs::exists(started); }));
    sink.send("+15550000002", "22222", "t");
    sink.send("+15550000003", "33333", "t");
  }
  EXPECT_EQ(readFile(log), "+15550000001\n");
}

TEST(CommandSmsSink, EmptyCommandThrows) {
  EXPECT_THROW(CommandSmsSink({}), std::invalid_argument);
  EXPECT_THROW(CommandSmsSink({""}), std::invalid_argument);
}

TEST(MakeSmsSink, EmptyCommandMeansTheDevSink) {
  auto dev = makeSmsSink({});
  EXPECT_NE(dynamic_cast<DevSmsSink*>(dev.get()), nullptr);
  auto command = makeSmsSink({"/bin/true"});
  EXPECT_NE(dynamic_cast<CommandSmsSink*>(command.get()), nullptr);
}

}  // namespace
}  // namespace switchboard::notify
