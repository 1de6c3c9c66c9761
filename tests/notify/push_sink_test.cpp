// The push sinks against a real kj-http receiver on 127.0.0.1.
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include "http_receiver.h"
#include "notify/push_sink.h"
#include "wait_until.h"

namespace switchboard::notify {
namespace {

using testing::closedPort;
using testing::HttpReceiver;
using testing::waitUntil;

struct DecodedPush {
  std::string phone;
  std::string text;
  double queued = -1;
};

// Decoded by Cap'n Proto's JSON parser, not by the code under test.
DecodedPush decode(const std::string& json) {
  capnp::JsonCodec codec;
  capnp::MallocMessageBuilder message;
  auto value = message.initRoot<capnp::JsonValue>();
  codec.decodeRaw(kj::ArrayPtr<const char>(json.data(), json.size()), value);
  DecodedPush out;
  for (auto field : value.getObject()) {
    std::string name = field.getName().cStr();
    if (name == "phone") out.phone = field.getValue().getString().cStr();
    if (name == "text") out.text = field.getValue().getString().cStr();
    if (name == "queued") out.queued = field.getValue().getNumber();
  }
  return out;
}

WebhookPushOptions fastRetries() {
  WebhookPushOptions options;
  options.firstBackoff = std::chrono::milliseconds(5);
  return options;
}

TEST(PushJson, EscapesQuotesControlsAndBadUtf8) {
  std::string text =
      "say \"hi\"\\ \n\t\x01 caf\xc3\xa9 \xff"
      " end";
  auto decoded = decode(pushJson("+15551234567", text, 42));
  EXPECT_EQ(decoded.phone, "+15551234567");
  EXPECT_EQ(decoded.text, "say \"hi\"\\ \n\t\x01 caf\xc3\xa9 \xef\xbf\xbd end");
  EXPECT_EQ(decoded.queued, 42);
  EXPECT_EQ(pushJson("a", "b", 7), R"({"phone":"a","text":"b","queued":7})");
}

TEST(LogPushSink, CountsEveryPushAsSent) {
  LogPushSink sink;
  sink.notify("+15550000001", "hello", 1);
  sink.notify("+15550000001", "hello again", 2);
  EXPECT_EQ(sink.stats().sent, 2u);
  EXPECT_EQ(sink.stats().failed, 0u);
}

TEST(WebhookPushSink, ReceiverGetsJsonPosts) {
  HttpReceiver receiver;
  WebhookPushSink sink(receiver.url("/hooks/push"), fastRetries());
  sink.notify("+15551234567", "New message from \"Bob\"", 3);
  sink.notify("+15557654321", "Two new messages", 2);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 2; }));

  auto requests = receiver.received();
  ASSERT_EQ(requests.size(), 2u);
  std::vector<DecodedPush> pushes;
  for (const auto& request : requests) {
    EXPECT_EQ(request.method, "POST");
    EXPECT_EQ(request.url, "/hooks/push");
    EXPECT_EQ(request.contentType, "application/json");
    pushes.push_back(decode(request.body));
  }
  // Two workers may deliver in either order.
  if (pushes[0].phone != "+15551234567") std::swap(pushes[0], pushes[1]);
  EXPECT_EQ(pushes[0].phone, "+15551234567");
  EXPECT_EQ(pushes[0].text, "New message from \"Bob\"");
  EXPECT_EQ(pushes[0].queued, 3);
  EXPECT_EQ(pushes[1].phone, "+15557654321");
  EXPECT_EQ(pushes[1].queued, 2);
  EXPECT_EQ(sink.stats().failed, 0u);
}

TEST(WebhookPushSink, ReusesTheConnection) {
  HttpReceiver receiver;
  auto options = fastRetries();
  options.concurrency = 1;
  WebhookPushSink sink(receiver.url(), options);
  for (int i = 0; i < 10; ++i) {
    sink.notify("+15551234567", "message " + std::to_string(i), i);
    ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == std::uint64_t(i + 1); }));
  }
  EXPECT_EQ(receiver.received().size(), 10u);
  // One worker, ten pushes one after another: all over the first connection.
  EXPECT_EQ(receiver.connections(), 1u);
}

TEST(WebhookPushSink, RetriesA500) {
  HttpReceiver receiver({500, 503});
  WebhookPushSink sink(receiver.url(), fastRetries());
  sink.notify("+15551234567", "hello", 1);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 1; }));
  EXPECT_EQ(receiver.received().size(), 3u);
  EXPECT_EQ(sink.stats().failed, 0u);
}

TEST(WebhookPushSink, GivesUpAfterMaxRetries) {
  HttpReceiver receiver({500, 500, 500, 500, 500});
  WebhookPushSink sink(receiver.url(), fastRetries());
  sink.notify("+15551234567", "hello", 1);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 1; }));
  EXPECT_EQ(receiver.received().size(), 4u);  // the first attempt and 3 retries
  EXPECT_EQ(sink.stats().sent, 0u);
}

TEST(WebhookPushSink, DoesNotRetryA4xx) {
  HttpReceiver receiver({400});
  WebhookPushSink sink(receiver.url(), fastRetries());
  sink.notify("+15551234567", "hello", 1);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 1; }));
  sink.notify("+15551234567", "again", 2);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 1; }));
  EXPECT_EQ(receiver.received().size(), 2u);
}

TEST(WebhookPushSink, UnreachableReceiverCountsFailures) {
  WebhookPushSink sink("http://127.0.0.1:" + std::to_string(closedPort()) + "/push", fastRetries());
  for (int i = 0; i < 5; ++i) sink.notify("+15551234567", "hello", i);
  ASSERT_TRUE(waitUntil([&] { return sink.stats().failed == 5; }));
  EXPECT_EQ(sink.stats().sent, 0u);
  EXPECT_EQ(sink.stats().dropped, 0u);
}

TEST(WebhookPushSink, FullQueueDropsWithoutBlocking) {
  auto options = fastRetries();
  options.concurrency = 1;
  options.queueCapacity = 2;
  options.firstBackoff = std::chrono::seconds(60);  // the one worker sits in its backoff
  options.flushBound = std::chrono::milliseconds(50);
  WebhookPushSink sink("http://127.0.0.1:" + std::to_string(closedPort()) + "/push", options);
  for (int i = 0; i < 10; ++i) sink.notify("+15551234567", "hello", i);
  // At most one push is with the worker and two wait in the queue.
  EXPECT_GE(sink.stats().dropped, 7u);
  EXPECT_EQ(sink.stats().sent, 0u);
  // The destructor must not wait out the 60 s backoff: bounded by flushBound.
}

TEST(WebhookPushSink, DestructorFlushesTheQueue) {
  HttpReceiver receiver;
  {
    auto options = fastRetries();
    options.flushBound = std::chrono::seconds(10);  // a failure guard, not a measurement
    WebhookPushSink sink(receiver.url(), options);
    for (int i = 0; i < 50; ++i) sink.notify("+15551234567", "hello", i);
  }
  EXPECT_EQ(receiver.received().size(), 50u);
}

TEST(WebhookPushSink, ManyThreadsNotifyAtOnce) {
  HttpReceiver receiver;
  WebhookPushSink sink(receiver.url(), fastRetries());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sink, t] {
      for (int i = 0; i < 250; ++i) sink.notify("+1555000000" + std::to_string(t), "m", i);
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(waitUntil([&] { return sink.stats().sent == 1000; }));
  EXPECT_EQ(receiver.received().size(), 1000u);
  EXPECT_EQ(sink.stats().failed + sink.stats().dropped, 0u);
}

TEST(WebhookPushSink, RefusesMalformedUrls) {
  EXPECT_THROW(WebhookPushSink("https://push.example.com/hook"), std::invalid_argument);
  EXPECT_THROW(WebhookPushSink("ftp://push.example.com/hook"), std::invalid_argument);
  EXPECT_THROW(WebhookPushSink("http://"), std::invalid_argument);
  EXPECT_THROW(WebhookPushSink("http://127.0.0.1:99999/x"), std::invalid_argument);
  EXPECT_THROW(WebhookPushSink("http://127.0.0.1:port/x"), std::invalid_argument);
  EXPECT_THROW(WebhookPushSink("push.example.com/hook"), std::invalid_argument);
  try {
    WebhookPushSink sink("https://push.example.com/hook");
  } catch (const std::invalid_argument& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("https"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(MakePushSink, EmptyMeansLogAndBadUrlThrows) {
  auto sink = makePushSink("");
  EXPECT_NE(dynamic_cast<LogPushSink*>(sink.get()), nullptr);
  EXPECT_THROW(makePushSink("https://x.example/hook"), std::invalid_argument);
  auto webhook = makePushSink("http://127.0.0.1:8080/hook");
  EXPECT_NE(dynamic_cast<WebhookPushSink*>(webhook.get()), nullptr);
}

}  // namespace
}  // namespace switchboard::notify
