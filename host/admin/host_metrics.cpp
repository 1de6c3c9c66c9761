#include "admin/host_metrics.h"

#include <array>
#include <map>

#include "admin/prometheus_text.h"
#include "cluster/cluster_node.h"
#include "messaging/messaging_service.h"
#include "notify/push_sink.h"
#include "notify/sms_sink.h"
#include "plugin/plugin_host_services.h"
#include "plugin/plugin_manager.h"
#include "session/session_table.h"
#include "store/store.h"

namespace switchboard::admin {
namespace {

// Upper bounds of the session queue length histogram.
constexpr std::array<std::uint64_t, 9> kQueueBounds = {0, 1, 5, 10, 50, 100, 500, 1000, 5000};

void counter(PrometheusText& out, std::string_view name, std::string_view help,
             std::uint64_t value) {
  out.family(name, "counter", help);
  out.sample(name, value);
}

void gauge(PrometheusText& out, std::string_view name, std::string_view help, std::uint64_t value) {
  out.family(name, "gauge", help);
  out.sample(name, value);
}

void sessionQueues(PrometheusText& out, const std::vector<session::SessionRef>& sessions) {
  std::array<std::uint64_t, kQueueBounds.size()> cumulative{};
  std::uint64_t sum = 0;
  std::uint64_t max = 0;
  for (const auto& ref : sessions) {
    std::uint64_t length = ref.gauges ? ref.gauges->queueLength.load() : 0;
    sum += length;
    max = std::max(max, length);
    for (std::size_t i = 0; i < kQueueBounds.size(); ++i) {
      if (length <= kQueueBounds[i]) ++cumulative[i];
    }
  }
  const char* name = "switchboard_session_queue_length";
  out.family(name, "histogram", "Outbound queue length of each live session");
  for (std::size_t i = 0; i < kQueueBounds.size(); ++i) {
    std::string bound = std::to_string(kQueueBounds[i]);
    out.sample("switchboard_session_queue_length_bucket", {{"le", bound}}, cumulative[i]);
  }
  out.sample("switchboard_session_queue_length_bucket", {{"le", "+Inf"}},
             static_cast<std::uint64_t>(sessions.size()));
  out.sample("switchboard_session_queue_length_sum", sum);
  out.sample("switchboard_session_queue_length_count", static_cast<std::uint64_t>(sessions.size()));
  gauge(out, "switchboard_session_queue_length_max", "The longest outbound queue of a live session",
        max);
}

void plugins(PrometheusText& out, const std::vector<plugin::KindStatus>& kinds) {
  out.family("switchboard_plugin_calls_total", "counter", "Calls into each plugin version");
  for (const auto& kind : kinds) {
    for (const auto& v : kind.versions) {
      out.sample("switchboard_plugin_calls_total",
                 {{"kind", plugin::kindName(kind.kind)}, {"version", v.version}}, v.calls);
    }
  }
  out.family("switchboard_plugin_errors_total", "counter",
             "Calls into each plugin version that failed (threw)");
  for (const auto& kind : kinds) {
    for (const auto& v : kind.versions) {
      out.sample("switchboard_plugin_errors_total",
                 {{"kind", plugin::kindName(kind.kind)}, {"version", v.version}}, v.errors);
    }
  }
  const char* latency = "switchboard_plugin_call_latency_seconds";
  out.family(latency, "summary", "Latency of calls into each plugin version");
  for (const auto& kind : kinds) {
    for (const auto& v : kind.versions) {
      std::string_view k = plugin::kindName(kind.kind);
      out.sample(latency, {{"kind", k}, {"version", v.version}, {"quantile", "0.5"}},
                 static_cast<double>(v.p50Ns) / 1e9);
      out.sample(latency, {{"kind", k}, {"version", v.version}, {"quantile", "0.99"}},
                 static_cast<double>(v.p99Ns) / 1e9);
      out.sample("switchboard_plugin_call_latency_seconds_count",
                 {{"kind", k}, {"version", v.version}}, v.calls);
    }
  }
  const char* pause = "switchboard_plugin_swap_pause_seconds";
  out.family(pause, "summary", "How long calls waited while a plugin version was swapped in");
  for (const auto& kind : kinds) {
    std::string_view k = plugin::kindName(kind.kind);
    out.sample(pause, {{"kind", k}, {"quantile", "0.5"}},
               static_cast<double>(kind.pauseP50Us) / 1e6);
    out.sample(pause, {{"kind", k}, {"quantile", "0.99"}},
               static_cast<double>(kind.pauseP99Us) / 1e6);
    out.sample(pause, {{"kind", k}, {"quantile", "1"}}, static_cast<double>(kind.pauseMaxUs) / 1e6);
    out.sample("switchboard_plugin_swap_pause_seconds_count", {{"kind", k}}, kind.swaps);
  }
}

void pluginCounters(PrometheusText& out, const std::vector<plugin::CounterSample>& samples) {
  const char* name = "switchboard_plugin_counter_total";
  out.family(name, "counter", "Counters the plugins keep themselves, by kind, version and name");
  for (const auto& s : samples) {
    out.sample(name, {{"kind", s.kind}, {"version", s.version}, {"name", s.name}}, s.value);
  }
}

void storeCommits(PrometheusText& out, const store::StoreStats& stats) {
  // Exported on a fixed 1-2-5 scale so dashboards keep their buckets; the
  // counts come from the histogram's finer log-linear buckets.
  static constexpr std::array<std::uint64_t, 19> kBoundsMicros = {
      10,     20,     50,      100,     200,     500,       1'000,     2'000,     5'000,     10'000,
      20'000, 50'000, 100'000, 200'000, 500'000, 1'000'000, 2'000'000, 5'000'000, 10'000'000};
  const auto& h = stats.commitLatency;
  const char* name = "switchboard_store_commit_latency_seconds";
  out.family(name, "histogram", "Store transaction time from BEGIN to durable COMMIT");
  for (std::uint64_t bound : kBoundsMicros) {
    out.sample("switchboard_store_commit_latency_seconds_bucket",
               {{"le", PrometheusText::formatDouble(static_cast<double>(bound) / 1e6)}},
               h.countAtOrBelow(bound));
  }
  out.sample("switchboard_store_commit_latency_seconds_bucket", {{"le", "+Inf"}}, h.count());
  out.sample("switchboard_store_commit_latency_seconds_sum", {},
             static_cast<double>(h.sum()) / 1e6);
  out.sample("switchboard_store_commit_latency_seconds_count", h.count());
  counter(out, "switchboard_store_commits_total", "Store transactions committed", stats.commits);
  counter(out, "switchboard_store_writes_total", "Store writes run", stats.writes);
  counter(out, "switchboard_store_statement_cache_hits_total",
          "Prepared statements reused from the per-connection cache", stats.statementCacheHits);
  counter(out, "switchboard_store_statement_cache_misses_total",
          "Statements prepared because the cache did not hold them", stats.statementCacheMisses);
  counter(out, "switchboard_store_write_vm_steps_total",
          "SQLite VM steps run by store writes (work done, grows with rows visited)",
          stats.writeVmSteps);
}

// Only with --cluster: a single node has no cluster metrics at all.
void clusterMetrics(PrometheusText& out, cluster::ClusterNode& node,
                    const messaging::MessagingCounters& c, std::size_t copiesOwed) {
  auto status = node.status();
  gauge(out, "switchboard_cluster_degraded",
        "1 while this node has lost NATS and serves only its own sessions",
        status.state == "degraded" ? 1 : 0);
  counter(out, "switchboard_cluster_disconnects_total", "Times this node lost NATS",
          status.disconnects);
  counter(out, "switchboard_cluster_heartbeats_total", "Node records written to the registry",
          status.heartbeats);
  counter(out, "switchboard_cluster_heartbeat_errors_total",
          "Heartbeats refused while connected (a name clash, JetStream errors)",
          status.heartbeatErrors);
  auto outbox = node.transport().counts();
  counter(out, "switchboard_cluster_published_total",
          "Messages and receipts put into the cluster's stream by the outbox", outbox.published);
  counter(out, "switchboard_cluster_kept_total",
          "Messages and receipts for phones elsewhere kept in this node's store",
          c.clusterKept.load());
  counter(out, "switchboard_cluster_copied_total",
          "Items of this node's own written to its store and copied into the stream",
          c.clusterCopied.load());
  gauge(out, "switchboard_cluster_copies_owed",
        "Items of this node's own in its store with no copy in the stream yet (NATS away)",
        copiesOwed);
  counter(out, "switchboard_cluster_waited_total",
          "Items that waited in the outbox while kept rows for their phone moved into the stream",
          outbox.waited);
  counter(out, "switchboard_cluster_rechecks_total",
          "Rechecks sent for notice batches that got no answer (a notice may be lost)",
          outbox.rechecks);
}

}  // namespace

std::string renderHostMetrics(const HostView& host) {
  PrometheusText out;
  auto& table = host.messaging.sessions();
  auto sessions = table.all();
  const auto& c = host.messaging.counters();

  gauge(out, "switchboard_connections", "Open phone connections", host.connectionCount());
  gauge(out, "switchboard_sessions", "Logged-in phone sessions",
        static_cast<std::uint64_t>(sessions.size()));
  sessionQueues(out, sessions);
  counter(out, "switchboard_queue_alerts_total", "Sessions whose queue passed the alert threshold",
          c.queueAlerts.load());
  counter(out, "switchboard_slow_consumer_kicks_total",
          "Sessions disconnected because their queue passed the limit", c.slowConsumerKicks.load());
  counter(out, "switchboard_messages_in_total", "Messages accepted from phones (per recipient)",
          c.messagesIn.load());
  counter(out, "switchboard_messages_out_total", "Messages delivered to phones",
          c.messagesOut.load());
  counter(out, "switchboard_messages_stored_total",
          "Message copies handed to the store (recipient away, queue full, or not delivered "
          "within durable-after-ms)",
          c.messagesStored.load());
  counter(out, "switchboard_logins_total", "Successful logins", c.logins.load());
  counter(out, "switchboard_failed_logins_total", "Refused logins", c.failedLogins.load());
  counter(out, "switchboard_registrations_total", "Devices registered with a code",
          c.registrations.load());

  plugins(out, host.plugins.status());
  pluginCounters(out, host.pluginServices.counters().snapshot());
  storeCommits(out, host.store.stats());

  auto sms = host.sms.stats();
  counter(out, "switchboard_sms_sent_total", "SMS handed to the SMS sink successfully", sms.sent);
  counter(out, "switchboard_sms_failed_total", "SMS that did not go out", sms.failed);
  auto push = host.push.stats();
  counter(out, "switchboard_push_sent_total", "Push notifications delivered to the sink",
          push.sent);
  counter(out, "switchboard_push_failed_total", "Push notifications given up on", push.failed);
  gauge(out, "switchboard_uptime_seconds", "Seconds since the host started", host.uptimeSeconds());
  if (host.cluster != nullptr) {
    clusterMetrics(out, *host.cluster, c, host.messaging.clusterCopiesOwed());
  }
  return out.text();
}

}  // namespace switchboard::admin
