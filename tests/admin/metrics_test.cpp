// GET /metrics from a real host, read with kj-http's client, every line parsed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstring>
#include <map>
#include <regex>
#include <set>

#include "admin_test_host.h"
#include "metrics_scrape.h"

namespace switchboard::admin::testing {
namespace {

using ::testing::HasSubstr;

TEST_F(AdminHostTest, MetricsEndpointServesEveryFamilyInPrometheusText) {
  auto inbox = std::make_shared<InboxLog>();
  const std::string phone = "+15550001001";
  client->login(phones(), phone, client->registerPhone(phones(), phone), inbox);

  auto answer = httpGet(host->metricsEndpoint(), "/metrics");
  ASSERT_EQ(answer.status, 200u);
  EXPECT_THAT(answer.contentType, HasSubstr("text/plain; version=0.0.4"));
  auto metrics = Exposition::parse(answer.body);

  for (const char* family :
       {"switchboard_connections", "switchboard_sessions", "switchboard_session_queue_length",
        "switchboard_session_queue_length_max", "switchboard_queue_alerts_total",
        "switchboard_slow_consumer_kicks_total", "switchboard_messages_in_total",
        "switchboard_messages_out_total", "switchboard_logins_total",
        "switchboard_failed_logins_total", "switchboard_plugin_calls_total",
        "switchboard_plugin_errors_total", "switchboard_plugin_call_latency_seconds",
        "switchboard_plugin_swap_pause_seconds", "switchboard_store_commit_latency_seconds",
        "switchboard_store_commits_total", "switchboard_sms_sent_total",
        "switchboard_push_sent_total", "switchboard_plugin_counter_total"}) {
    EXPECT_TRUE(metrics.types.count(family)) << family;
  }
  EXPECT_EQ(metrics.types["switchboard_session_queue_length"], "histogram");
  EXPECT_EQ(metrics.types["switchboard_store_commit_latency_seconds"], "histogram");
  EXPECT_EQ(metrics.types["switchboard_plugin_call_latency_seconds"], "summary");

  EXPECT_EQ(metrics.value("switchboard_sessions"), 1.0);
  EXPECT_EQ(metrics.value("switchboard_logins_total"), 1.0);
  EXPECT_EQ(metrics.value("switchboard_sms_sent_total"), 1.0);
  EXPECT_EQ(metrics.value("switchboard_session_queue_length_count"), 1.0);
  EXPECT_EQ(metrics.value("switchboard_session_queue_length_bucket", {{"le", "+Inf"}}), 1.0);
  auto authCalls =
      metrics.value("switchboard_plugin_calls_total", {{"kind", "auth"}, {"version", "1.0.0"}});
  ASSERT_TRUE(authCalls.has_value());
  EXPECT_GE(*authCalls, 2.0);  // requestCode, verify
  EXPECT_TRUE(metrics
                  .value("switchboard_plugin_call_latency_seconds",
                         {{"kind", "auth"}, {"version", "1.0.0"}, {"quantile", "0.99"}})
                  .has_value());
  EXPECT_TRUE(metrics.value("switchboard_plugin_swap_pause_seconds_count", {{"kind", "routing"}})
                  .has_value());

  // The store histogram is cumulative and ends with +Inf == _count.
  double previous = 0;
  std::size_t buckets = 0;
  for (const auto& s : metrics.samples) {
    if (s.name != "switchboard_store_commit_latency_seconds_bucket") continue;
    EXPECT_GE(s.value, previous);
    previous = s.value;
    ++buckets;
  }
  EXPECT_EQ(buckets, 20u);
  EXPECT_EQ(metrics.value("switchboard_store_commit_latency_seconds_bucket", {{"le", "+Inf"}}),
            metrics.value("switchboard_store_commit_latency_seconds_count"));
  EXPECT_GT(*metrics.value("switchboard_store_commits_total"), 0.0);

  for (const auto& s : metrics.samples) {
    if (s.name != "switchboard_plugin_counter_total") continue;
    EXPECT_EQ(s.labels.size(), 3u);
    EXPECT_TRUE(s.labels.count("kind") && s.labels.count("version") && s.labels.count("name"));
  }

  EXPECT_EQ(httpGet(host->metricsEndpoint(), "/elsewhere").status, 404u);
  EXPECT_EQ(httpGet(host->metricsEndpoint(), "/metrics?x=1").status, 200u);
}

// A scrape ends its connection: a client that reads to EOF (HTTP/1.0, nc, a
// shell script) gets the whole answer at once, not after a keep-alive timeout.
TEST_F(AdminHostTest, MetricsAnswerClosesTheConnection) {
  kj::String answer = [&] {
    auto io = kj::setupAsyncIo();
    auto address =
        io.provider->getNetwork().parseAddress(host->metricsEndpoint().c_str()).wait(io.waitScope);
    auto stream = address->connect().wait(io.waitScope);
    kj::StringPtr request = "GET /metrics HTTP/1.0\r\n\r\n";
    stream->write(request.begin(), request.size()).wait(io.waitScope);
    return stream->readAllText().wait(io.waitScope);
  }();
  EXPECT_THAT(std::string(answer.cStr()), HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(std::string(answer.cStr()), HasSubstr("\nswitchboard_sessions 0\n"));
}

TEST_F(AdminHostTest, BusyMetricsPortRefusesToStart) {
  TempDir other;
  HostConfig config = testConfig(other.path());
  config.metricsListen = host->metricsEndpoint();
  try {
    HostProcess second(config);
    FAIL() << "a second host bound a busy metrics port";
  } catch (const HostStartError& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot serve metrics on " + host->metricsEndpoint() + ": Address already in use");
  }
}

TEST(Metrics, MalformedEndpointRefusesToStart) {
  for (std::string bad : {"127.0.0.1:99999", "127.0.0.1", "127.0.0.1:http"}) {
    TempDir dir;
    HostConfig config = testConfig(dir.path());
    config.metricsListen = bad;
    try {
      HostProcess host(config);
      ADD_FAILURE() << "started with --metrics-listen " << bad;
    } catch (const HostStartError& e) {
      EXPECT_THAT(e.what(), HasSubstr("--metrics-listen")) << bad;
    }
  }
}

}  // namespace
}  // namespace switchboard::admin::testing
