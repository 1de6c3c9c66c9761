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

namespace switchboard::admin::testing {
namespace {

using ::testing::HasSubstr;

struct HttpAnswer {
  unsigned status = 0;
  std::string contentType;
  std::string body;
};

HttpAnswer httpGet(const std::string& endpoint, const std::string& path) {
  auto io = kj::setupAsyncIo();
  kj::HttpHeaderTable table;
  auto client =
      kj::newHttpClient(io.provider->getTimer(), table, io.provider->getNetwork(), nullptr);
  std::string url = "http://" + endpoint + path;
  auto response = client->request(kj::HttpMethod::GET, url.c_str(), kj::HttpHeaders(table))
                      .response.wait(io.waitScope);
  HttpAnswer answer;
  answer.status = response.statusCode;
  KJ_IF_MAYBE (type, response.headers->get(kj::HttpHeaderId::CONTENT_TYPE)) {
    answer.contentType = type->cStr();
  }
  answer.body = response.body->readAllText().wait(io.waitScope).cStr();
  return answer;
}

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the exposition text strictly: every sample belongs to a family
// announced before it with HELP then TYPE; label values are unescaped.
struct Exposition {
  std::map<std::string, std::string> types;
  std::vector<Sample> samples;

  static Exposition parse(const std::string& text) {
    Exposition out;
    std::set<std::string> helped;
    static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
    static const std::regex type(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary)$)");
    static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)$)");
    static const std::regex label(R"(^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)\"(,|$))");
    std::size_t start = 0;
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      std::string line = text.substr(start, end - start);
      start = end + 1;
      std::smatch m;
      if (std::regex_match(line, m, help)) {
        helped.insert(m[1]);
      } else if (std::regex_match(line, m, type)) {
        EXPECT_TRUE(helped.count(m[1])) << "TYPE before HELP: " << line;
        EXPECT_FALSE(out.types.count(m[1])) << "family announced twice: " << line;
        out.types[m[1]] = m[2];
      } else if (std::regex_match(line, m, sample)) {
        Sample s;
        s.name = m[1];
        std::string labels = m[3];
        while (!labels.empty()) {
          std::smatch l;
          if (!std::regex_search(labels, l, label)) {
            ADD_FAILURE() << "bad labels in: " << line;
            break;
          }
          std::string value;
          std::string raw = l[2];
          for (std::size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] == '\\' && i + 1 < raw.size()) {
              ++i;
              value += raw[i] == 'n' ? '\n' : raw[i];
            } else {
              value += raw[i];
            }
          }
          s.labels[l[1]] = value;
          labels = l.suffix();
        }
        std::string number = m[4];
        char* rest = nullptr;
        s.value = std::strtod(number.c_str(), &rest);
        EXPECT_EQ(*rest, '\0') << "bad value in: " << line;
        std::string family = s.name;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          std::string base = s.name.size() > std::strlen(suffix)
                                 ? s.name.substr(0, s.name.size() - std::strlen(suffix))
                                 : "";
          if (s.name.ends_with(suffix) && out.types.count(base) &&
              (out.types[base] == "histogram" || out.types[base] == "summary")) {
            family = base;
          }
        }
        EXPECT_TRUE(out.types.count(family)) << "sample without TYPE: " << line;
        out.samples.push_back(std::move(s));
      } else {
        ADD_FAILURE() << "unparseable line: '" << line << "'";
      }
    }
    return out;
  }

  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
};

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
