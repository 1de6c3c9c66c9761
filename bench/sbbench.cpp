// sbbench: the load generator. One coordinator process starts the server under test
// (Switchboard, mosquitto or ejabberd), forks --procs worker processes that carry the load,
// samples the server in /proc, and prints the figures (a summary, or one JSON object).
//
//   sbbench connect 5000 --procs 2
//   sbbench throughput 64 --pin --json
//   sbbench latency 20000            (offered msgs/s over --pairs pairs)
//   sbbench swap 5000 --swap-rounds 3
//   sbbench swap 200 --cluster-nodes 3 --pair-nodes cross --swap-rounds 1  (rolling upgrade)
//   sbbench offline 64 --offline-messages 50
//   sbbench groups 512               (phone budget for groups of 10 and of 256)
//   sbbench dbsize 1000000 --pairs 32 (database size after N delivered messages)
//   sbbench throughput 64 --peer mosquitto
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <signal.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_options.h"
#include "database_files.h"
#include "latency_histogram.h"
#include "lean_phone.h"
#include "mqtt_load.h"
#include "peer_servers.h"
#include "phone_load.h"
#include "plugin_swapper.h"
#include "report_fields.h"
#include "server_process.h"
#include "worker_link.h"
#include "xmpp_load.h"

namespace fs = std::filesystem;
using namespace switchboard::bench;

namespace {

constexpr std::int64_t kSecond = 1000000000;

void sleepUntil(std::int64_t ns) {
  std::int64_t left = ns - monotonicNs();
  if (left > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(left));
}

fs::path executableDir() {
  return fs::read_symlink("/proc/self/exe").parent_path();
}

// SIGINT/SIGTERM end the run. The server and the workers die with the coordinator
// (PR_SET_PDEATHSIG), but ejabberd's runtime runs under su, out of reach of that: the
// handler also kills the server's process tree as last seen, kept here by pid.
std::array<std::atomic<pid_t>, 64> serverTree{};

void rememberServerTree(pid_t root) {
  std::vector<pid_t> tree = root > 0 ? descendantsOf(root) : std::vector<pid_t>{};
  if (root > 0) tree.insert(tree.begin(), root);
  for (size_t i = 0; i < serverTree.size(); ++i) serverTree[i] = i < tree.size() ? tree[i] : 0;
}

void onStopSignal(int) {
  for (auto& pid : serverTree) {
    pid_t p = pid.load();
    if (p > 0) ::kill(p, SIGKILL);
  }
  std::_Exit(130);
}

// Everything one run of one scenario against one server produced.
struct RunOutcome {
  ReportFields setup;                         // summed/ranged over workers
  ReportFields result;                        // summed over workers
  ReportFields database;                      // dbsize: the host's SQLite files once it stopped
  LatencyHistogram latency, intendedLatency;  // from the actual and from the intended send
  LatencyHistogram swapLatency, swapIntendedLatency;
  LatencyHistogram sendLag;     // actual - intended send
  LatencyHistogram receiveLag;  // the generator's read - the kernel's receive stamp
  ProcSample base, loaded, windowStart, windowEnd;
  // The same per server process, in serverPids() order (a cluster: nats-server, then nodes).
  std::vector<ProcSample> baseEach, loadedEach, windowStartEach, windowEndEach;
  std::vector<std::uint64_t> pausesUs;
  std::uint64_t swapsOk = 0, swapsFailed = 0;
  std::string swapFailure;
  std::int64_t swapNs = 0;  // the swaps (a cluster: the rolling upgrades) from first to last
  std::int64_t registerSpanNs = 0, loginSpanNs = 0;
  std::int64_t storeNsMax = 0, drainNsMax = 0, windowNs = 0;
  std::uint64_t fdLimit = 0;
};

// Adds the numeric fields of `from` into `into` (counters), keeping the first text value.
void addFields(ReportFields& into, const ReportFields& from) {
  for (const auto& [k, v] : from.items()) {
    if (k.rfind("hist", 0) == 0 || k.find("_ns") != std::string::npos) continue;
    char* end = nullptr;
    double value = std::strtod(v.c_str(), &end);
    if (end != nullptr && *end == '\0' && !v.empty()) {
      into.set(k, into.number(k) + value);
    } else if (!into.has(k) || into.text(k) == "none") {
      into.set(k, v);
    }
  }
}

int workerBody(const BenchOptions& options, WorkerLink& link) {
  if (options.peer == "mosquitto") return runMqttWorker(options, link);
  if (options.peer == "ejabberd") return runXmppWorker(options, link);
  if (options.generator == "lean") return runLeanPhoneWorker(options, link);
  return runPhoneWorker(options, link);
}

bool timedScenario(const std::string& s) {
  return s == "throughput" || s == "latency" || s == "groups" || s == "swap" || s == "connect";
}

// Workers of these run their messages through and report on their own (no "stop").
bool selfTimedScenario(const std::string& s) {
  return s == "offline" || s == "dbsize";
}

// How long to wait for a worker's result: 5 minutes, plus 3 ms per message of a self-timed
// run (its store and drain phases each allow a millisecond per message).
int resultTimeoutMs(const BenchOptions& o) {
  std::uint64_t messages = o.scenario == "offline"  ? o.count * o.offlineMessages
                           : o.scenario == "dbsize" ? o.count
                                                    : 0;
  return static_cast<int>(std::min<std::uint64_t>(300000 + 3 * messages, 2000000000));
}

// Samples every process of the server together, and (into `each`) one by one.
ProcSample sampleServer(const PeerServer& server, std::vector<ProcSample>& each) {
  std::vector<pid_t> pids = serverPids(server);
  each.clear();
  if (pids.size() > 1) {
    for (pid_t pid : pids) each.push_back(sampleProc(pid));
  }
  return sampleProcs(pids);
}

RunOutcome runOnce(const BenchOptions& baseOptions, const fs::path& runDir) {
  RunOutcome out;
  out.fdLimit = raiseFileLimit();
  BenchOptions options = baseOptions;
  PeerServer server = startPeer(options, runDir);
  options.serverPort = server.port;
  options.codeLog = server.logPath;
  for (const auto& node : server.nodes) {
    options.nodePorts.push_back(node.port);
    options.nodeLogs.push_back(node.logPath);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  rememberServerTree(server.process->pid());
  out.base = sampleServer(server, out.baseEach);

  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int w = 0; w < options.procs; ++w) {
    BenchOptions mine = options;
    mine.workerIndex = w;
    workers.push_back(std::make_unique<WorkerProcess>(
        [mine](WorkerLink& link) { return workerBody(mine, link); }, options.pin ? 1 : -1));
  }
  std::int64_t registerStart = INT64_MAX, registerEnd = 0, loginStart = INT64_MAX, loginEnd = 0;
  for (auto& worker : workers) {
    ReportFields ready;
    if (!worker->await("ready", ready, 900000)) {
      throw std::runtime_error("a worker died or timed out during setup (see notes above)");
    }
    addFields(out.setup, ready);
    registerStart = std::min<std::int64_t>(registerStart, ready.number("register_start_ns"));
    registerEnd = std::max<std::int64_t>(registerEnd, ready.number("register_end_ns"));
    loginStart = std::min<std::int64_t>(loginStart, ready.number("login_start_ns"));
    loginEnd = std::max<std::int64_t>(loginEnd, ready.number("login_end_ns"));
  }
  out.registerSpanNs = registerEnd - registerStart;
  out.loginSpanNs = loginEnd - loginStart;
  if (options.scenario == "connect") {
    std::this_thread::sleep_for(std::chrono::duration<double>(options.holdSeconds));
  }
  rememberServerTree(server.process->pid());
  out.loaded = sampleServer(server, out.loadedEach);

  std::int64_t t0 = monotonicNs() + 100000000;
  for (auto& worker : workers) worker->command("go " + std::to_string(t0));
  std::int64_t windowStart = t0 + static_cast<std::int64_t>(options.warmupSeconds * kSecond);
  std::int64_t phaseNs = static_cast<std::int64_t>(options.seconds * kSecond);
  if (options.scenario == "connect") {
    sleepUntil(t0 + kSecond);
  } else if (options.scenario == "swap") {
    sleepUntil(windowStart);
    out.windowStart = sampleServer(server, out.windowStartEach);
    sleepUntil(windowStart + phaseNs);
    std::int64_t mark = monotonicNs();
    for (auto& worker : workers) worker->command("mark " + std::to_string(mark));
    // A cluster: the rolling upgrade through node n0's admin socket (the nodes' data
    // directories are runDir/nN, peer_servers.cpp).
    bool cluster = options.clusterNodes > 0;
    PluginSwapper swapper(runDir / (cluster ? "n0" : "data") / "admin.sock");
    std::int64_t swapStart = monotonicNs();
    SwapFigures figures = cluster ? swapper.upgradeCluster(options.pluginDir, options.swapRounds)
                                  : swapper.swapEach(options.pluginDir, options.swapRounds);
    out.swapNs = monotonicNs() - swapStart;
    out.pausesUs = figures.pausesUs;
    out.swapsOk = figures.ok;
    out.swapsFailed = figures.failed;
    out.swapFailure = figures.firstFailure;
    sleepUntil(std::max(mark + phaseNs, monotonicNs() + kSecond / 2));
  } else if (timedScenario(options.scenario)) {
    sleepUntil(windowStart);
    out.windowStart = sampleServer(server, out.windowStartEach);
    sleepUntil(windowStart + phaseNs);
  } else if (options.scenario == "dbsize") {
    out.windowStart = out.loaded;
  }
  if (!selfTimedScenario(options.scenario)) {
    out.windowEnd = sampleServer(server, out.windowEndEach);
    for (auto& worker : workers) worker->command("stop");
  }
  for (auto& worker : workers) {
    ReportFields result;
    if (!worker->await("result", result, resultTimeoutMs(options))) {
      throw std::runtime_error("a worker died or timed out (see notes above)");
    }
    addFields(out.result, result);
    out.latency.decodeAdd(result.text("hist"));
    out.intendedLatency.decodeAdd(result.text("hist_intended"));
    out.swapLatency.decodeAdd(result.text("hist_swap"));
    out.swapIntendedLatency.decodeAdd(result.text("hist_swap_intended"));
    out.sendLag.decodeAdd(result.text("hist_send_lag"));
    out.receiveLag.decodeAdd(result.text("hist_receive_lag"));
    out.storeNsMax = std::max<std::int64_t>(out.storeNsMax, result.number("store_ns"));
    out.drainNsMax = std::max<std::int64_t>(out.drainNsMax, result.number("drain_ns"));
    out.windowNs = std::max<std::int64_t>(out.windowNs, result.number("window_ns"));
  }
  if (selfTimedScenario(options.scenario)) out.windowEnd = sampleServer(server, out.windowEndEach);
  for (auto& worker : workers) worker->finish(5000);
  stopPeer(server);
  rememberServerTree(0);
  // The host stopped cleanly (SIGTERM): what it left is what a restart would find.
  if (options.scenario == "dbsize") out.database = measureDatabases(runDir / "data");
  return out;
}

double percentileUs(const LatencyHistogram& h, double q) {
  return h.percentileNs(q) / 1000.0;
}

void addLatency(ReportFields& r, const std::string& prefix, const LatencyHistogram& h) {
  r.set(prefix + "samples", h.count());
  r.set(prefix + "p50_us", percentileUs(h, 0.50));
  r.set(prefix + "p99_us", percentileUs(h, 0.99));
  r.set(prefix + "p999_us", percentileUs(h, 0.999));
  r.set(prefix + "max_us", static_cast<double>(h.maxNs()) / 1000.0);
}

// The generator's own lag (send_lag_*: how late it sent; receive_lag_*: how long arrived
// bytes waited in the socket for its loop): p50, p99, max.
void addLag(ReportFields& r, const std::string& prefix, const LatencyHistogram& h) {
  r.set(prefix + "p50_us", percentileUs(h, 0.50));
  r.set(prefix + "p99_us", percentileUs(h, 0.99));
  r.set(prefix + "max_us", static_cast<double>(h.maxNs()) / 1000.0);
}

// Latency from the actual send (p50_us ...) and from the intended send (intended_p50_us ...),
// both to the arrival (the kernel's receive stamp).
void addLatencies(ReportFields& r, const std::string& prefix, const LatencyHistogram& actual,
                  const LatencyHistogram& intended) {
  addLatency(r, prefix, actual);
  addLatency(r, prefix + "intended_", intended);
}

std::uint64_t pausePercentile(std::vector<std::uint64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto index = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(index, v.size() - 1)];
}

// A cluster run: memory (connect) or CPU per million delivered (the rest) of each process
// on its own, named nats, node0, node1, ... Nothing for one host.
void reportEachProcess(const BenchOptions& o, const RunOutcome& run, ReportFields& r,
                       const std::string& prefix, double delivered) {
  for (size_t i = 0; i < run.loadedEach.size(); ++i) {
    std::string name = prefix + (i == 0 ? "nats" : "node" + std::to_string(i - 1)) + "_";
    if (o.scenario == "connect") {
      double growth = static_cast<double>(run.loadedEach[i].rssBytes) -
                      static_cast<double>(run.baseEach.at(i).rssBytes);
      r.set(name + "rss_bytes", run.loadedEach[i].rssBytes);
      r.set(name + "rss_growth_bytes", growth);
      if (i == 0) continue;
      double sessions = run.setup.number("logged_in_node" + std::to_string(i - 1));
      r.set(name + "sessions", sessions);
      r.set(name + "rss_per_session_bytes", sessions > 0 ? growth / sessions : 0);
    } else if (i < run.windowEndEach.size() && i < run.windowStartEach.size()) {
      double cpu = run.windowEndEach[i].cpuSeconds - run.windowStartEach[i].cpuSeconds;
      r.set(name + "cpu_s_per_million", delivered > 0 ? cpu / (delivered / 1e6) : 0);
    }
  }
}

// Turns one run into the figures the scenario promises.
void report(const BenchOptions& o, const RunOutcome& run, ReportFields& r,
            const std::string& prefix) {
  const ReportFields& s = run.setup;
  const ReportFields& x = run.result;
  double windowS = static_cast<double>(run.windowNs) / kSecond;
  double cpuS = run.windowEnd.cpuSeconds - run.windowStart.cpuSeconds;
  r.set(prefix + "failures", s.number("register_failures") + s.number("login_failures") +
                                 s.number("hello_failures") + x.number("send_errors") +
                                 x.number("protocol_errors"));
  if (o.peer == "switchboard" && o.generator == "lean") {
    // The lean phones' own checks of every RPC message (lean_phone.cpp), counted in failures.
    r.set(prefix + "protocol_errors", x.number("protocol_errors"));
    // Delivered ticks: in send's reply (deliveredAt) or by Inbox.receipt; still awaited when
    // the run stopped.
    r.set(prefix + "delivered_ticks", x.number("delivered_ticks"));
    r.set(prefix + "ticks_awaited", x.number("ticks_awaited"));
    r.set(prefix + "sent", x.number("sent"));
    r.set(prefix + "delivered_total", x.number("delivered_total"));
  }
  if (s.text("first_failure") != "none" && !s.text("first_failure").empty()) {
    r.set(prefix + "first_failure", s.text("first_failure"));
  } else if (x.text("first_failure") != "none" && !x.text("first_failure").empty()) {
    r.set(prefix + "first_failure", x.text("first_failure"));
  }
  if (o.scenario == "connect") {
    double sessions = s.number("logged_in");
    r.set(prefix + "registered", s.number("registered"));
    if (o.clusterNodes > 0) {
      r.set(prefix + "register_retries", s.number("register_retries"));
      if (s.text("first_retry") != "none") r.set(prefix + "first_retry", s.text("first_retry"));
    }
    if (run.registerSpanNs > 0) {  // the peers have no registration step of their own
      r.set(prefix + "registrations_per_s",
            s.number("registered") * kSecond / static_cast<double>(run.registerSpanNs));
    }
    r.set(prefix + "sessions", sessions);
    r.set(prefix + "logins_per_s",
          sessions * kSecond / std::max<double>(1, static_cast<double>(run.loginSpanNs)));
    // The load generator's own CPU (its worker processes, summed) per login: how much of the
    // shared CPUs the generator took from the server while logins/s was measured.
    r.set(prefix + "generator_cpu_us_per_login",
          sessions > 0 ? s.number("login_cpu_us") / sessions : 0);
    double rss = static_cast<double>(run.loaded.rssBytes) - static_cast<double>(run.base.rssBytes);
    double tcpMem =
        static_cast<double>(run.loaded.tcpMemBytes) - static_cast<double>(run.base.tcpMemBytes);
    double slab =
        static_cast<double>(run.loaded.slabBytes) - static_cast<double>(run.base.slabBytes);
    r.set(prefix + "server_rss_bytes", run.loaded.rssBytes);
    r.set(prefix + "server_rss_per_session_bytes", sessions > 0 ? rss / sessions : 0);
    r.set(prefix + "tcp_mem_delta_bytes", tcpMem);
    // Both ends of every connection live on this machine: half the slab growth is the
    // server's sockets (an estimate; other processes' allocations add noise).
    double kernelPerSession = sessions > 0 ? (slab / 2 + std::max(0.0, tcpMem) / 2) / sessions : 0;
    r.set(prefix + "kernel_per_session_bytes_est", kernelPerSession);
    double perSession = (sessions > 0 ? rss / sessions : 0) + kernelPerSession;
    r.set(prefix + "projected_sessions_per_gib", perSession > 0 ? 1073741824.0 / perSession : 0);
    r.set(prefix + "fd_limit", run.fdLimit);
    reportEachProcess(o, run, r, prefix, 0);
    return;
  }
  if (o.scenario == "dbsize") {
    double delivered = x.number("delivered_window");
    r.set(prefix + "pairs", o.pairs);
    r.set(prefix + "delivered", delivered);
    r.set(prefix + "delivered_msgs_per_s", windowS > 0 ? delivered / windowS : 0);
    r.set(prefix + "server_cpu_s_per_million", delivered > 0 ? cpuS / (delivered / 1e6) : 0);
    r.set(prefix + "lost", x.number("lost"));
    r.set(prefix + "duplicated", x.number("duplicated"));
    r.set(prefix + "reordered", x.number("reordered"));
    for (const auto& [k, v] : run.database.items()) r.set(prefix + k, v);
    return;
  }
  if (o.scenario == "offline") {
    r.set(prefix + "stored", x.number("store_msgs"));
    r.set(prefix + "store_msgs_per_s",
          x.number("store_msgs") * kSecond /
              std::max<double>(1, static_cast<double>(run.storeNsMax)));
    r.set(prefix + "drained", x.number("drain_msgs"));
    r.set(prefix + "drain_msgs_per_s",
          x.number("drain_msgs") * kSecond /
              std::max<double>(1, static_cast<double>(run.drainNsMax)));
    r.set(prefix + "lost", x.number("lost"));
    r.set(prefix + "duplicated", x.number("duplicated"));
    r.set(prefix + "reordered", x.number("reordered"));
    double cpuAll = run.windowEnd.cpuSeconds - run.loaded.cpuSeconds;
    r.set(prefix + "server_cpu_s_per_million",
          x.number("store_msgs") > 0 ? cpuAll / (x.number("store_msgs") / 1e6) : 0);
    return;
  }
  double delivered = x.number("delivered_window");
  r.set(prefix + "delivered", delivered);
  r.set(prefix + "delivered_msgs_per_s", windowS > 0 ? delivered / windowS : 0);
  if (o.scenario == "groups") {
    r.set(prefix + "group_size", o.groupSize);
    r.set(prefix + "group_msgs_per_s", windowS > 0 ? x.number("completed_window") / windowS : 0);
  }
  if (o.scenario == "latency" || o.scenario == "swap")
    r.set(prefix + "offered_msgs_per_s", o.count);
  r.set(prefix + "server_cpu_s_per_million", delivered > 0 ? cpuS / (delivered / 1e6) : 0);
  r.set(prefix + "server_cpu_share", windowS > 0 ? cpuS / windowS : 0);
  // The user-space part (the server's own code; the rest is the kernel's: TCP, wake-ups), in
  // clock ticks (10 ms): meaningful over a window of seconds.
  double userS = run.windowEnd.userCpuSeconds - run.windowStart.userCpuSeconds;
  r.set(prefix + "server_user_cpu_s_per_million", delivered > 0 ? userS / (delivered / 1e6) : 0);
  reportEachProcess(o, run, r, prefix, delivered);
  r.set(prefix + "server_rss_bytes", run.windowEnd.rssBytes);
  addLatencies(r, prefix, run.latency, run.intendedLatency);
  addLag(r, prefix + "send_lag_", run.sendLag);
  addLag(r, prefix + "receive_lag_", run.receiveLag);
  r.set(prefix + "arrivals_without_kernel_stamp", x.number("arrivals_without_kernel_stamp"));
  r.set(prefix + "lost", x.number("lost"));
  r.set(prefix + "duplicated", x.number("duplicated"));
  r.set(prefix + "reordered", x.number("reordered"));
  // The generator's own CPU (its workers, summed, from the load's start to its drain) per
  // message delivered in that time: what the load cost the CPUs it shares with the server.
  r.set(
      prefix + "generator_cpu_us_per_msg",
      x.number("delivered_total") > 0 ? x.number("load_cpu_us") / x.number("delivered_total") : 0);
  r.set(prefix + "disconnects", x.number("disconnects"));
  r.set(prefix + "skipped_offers", x.number("skipped"));
  if (o.scenario == "swap") {
    addLatencies(r, prefix + "swap_", run.swapLatency, run.swapIntendedLatency);
    r.set(prefix + "swaps_ok", run.swapsOk);
    r.set(prefix + "swaps_failed", run.swapsFailed);
    if (!run.swapFailure.empty()) r.set(prefix + "swap_failure", run.swapFailure);
    r.set(prefix + "pause_p50_us", pausePercentile(run.pausesUs, 0.5));
    r.set(prefix + "pause_p99_us", pausePercentile(run.pausesUs, 0.99));
    r.set(prefix + "pause_max_us", pausePercentile(run.pausesUs, 1.0));
    if (o.clusterNodes > 0) {
      r.set(prefix + "upgrade_seconds", static_cast<double>(run.swapNs) / kSecond);
    }
  }
}

void printHuman(const BenchOptions& o, const ReportFields& r) {
  std::cout << "sbbench " << o.scenario << " " << o.count << " against " << o.peer << " ("
            << r.text("generator") << " generator, " << o.procs << " worker process"
            << (o.procs > 1 ? "es" : "") << ", "
            << (o.pin ? "pinned: server CPU 0, workers CPU 1" : "unpinned") << ")\n";
  for (const auto& [k, v] : r.items()) {
    if (k == "scenario" || k == "peer" || k == "count" || k == "procs" || k == "pinned" ||
        k == "tls" || k == "generator")
      continue;
    std::cout << "  " << k << std::string(k.size() < 36 ? 36 - k.size() : 1, ' ') << v << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, onStopSignal);
  std::signal(SIGTERM, onStopSignal);
  BenchOptions o;
  CLI::App app{"sbbench: Switchboard load generator and peer comparison"};
  app.add_option("scenario", o.scenario,
                 "connect, throughput, latency, swap, offline, groups, dbsize")
      ->required()
      ->check(CLI::IsMember(
          {"connect", "throughput", "latency", "swap", "offline", "groups", "dbsize"}));
  app.add_option("count", o.count,
                 "connect: N phones; throughput/offline: P pairs; latency/swap: offered msgs/s; "
                 "groups: phone budget per group size; dbsize: N messages delivered in all");
  app.add_option("--peer", o.peer, "server under test")
      ->check(CLI::IsMember({"switchboard", "mosquitto", "ejabberd"}));
  app.add_option("--transport", o.transport,
                 "Switchboard phones over tcp (the phone port) or ws (WebSocket, /rpc)")
      ->check(CLI::IsMember({"tcp", "ws"}));
  app.add_option("--generator", o.generator,
                 "Switchboard phones: full (capnp's RpcSystem per phone) or lean (Cap'n Proto RPC "
                 "frames on one epoll loop; connect, throughput, latency over tcp)")
      ->check(CLI::IsMember({"full", "lean"}));
  app.add_option("--procs", o.procs, "worker processes")->check(CLI::Range(1, 32));
  app.add_flag("--pin", o.pin, "server on CPU 0, workers on CPU 1");
  app.add_flag("--json", o.json, "print one JSON object");
  app.add_option("--seconds", o.seconds, "measured window (per phase for swap)");
  app.add_option("--hold", o.holdSeconds,
                 "connect: seconds the sessions stay idle before the memory sample (time for "
                 "a profiler's snapshot)");
  app.add_option("--warmup", o.warmupSeconds, "seconds of load before the window opens");
  app.add_option("--window", o.window, "messages in flight per pair until received");
  app.add_option("--pairs", o.pairs, "pairs carrying the load in latency, swap and dbsize");
  app.add_option("--body", o.bodyBytes, "message body bytes (at least 16)");
  app.add_option("--swap-rounds", o.swapRounds, "load+rollback rounds of each plugin kind");
  app.add_option("--offline-messages", o.offlineMessages, "messages per pair in offline");
  app.add_option("--group-sizes", o.groupSize, "one group size instead of 10 and 256");
  app.add_option("--server-threads", o.serverThreads, "network threads of the Switchboard host");
  app.add_option("--concurrency", o.concurrency, "registrations/logins in flight per worker");
  app.add_option("--keep-dir", o.keepDir, "run directory to keep (server logs, configs)");
  app.add_option("--server-binary", o.serverBinary, "the switchboard host binary");
  app.add_option("--plugin-dir", o.pluginDir, "the plugin build directory");
  app.add_option("--bench-dir", o.benchDir, "the peers' configuration templates");
  app.add_option("--cluster-nodes", o.clusterNodes,
                 "start a nats-server and this many Switchboard nodes joined by it (figures "
                 "summed over all of them)")
      ->check(CLI::Range(0, 16));
  app.add_option("--pair-nodes", o.pairNodes,
                 "with --cluster-nodes: the two phones of a pair on different nodes or the same")
      ->check(CLI::IsMember({"cross", "same"}));
  app.add_option("--server-prefix", o.serverPrefix,
                 "command put before the server's (e.g. \"perf record -g -o FILE --\")");
  app.add_option("--tls-ca", o.tlsCa, "phones connect with TLS, trusting this PEM CA file");
  app.add_option("--tls-cert", o.tlsCert, "the Switchboard host serves TLS with this certificate");
  app.add_option("--tls-key", o.tlsKey, "... and this key");
  CLI11_PARSE(app, argc, argv);
  if (o.generator == "lean" &&
      (o.peer != "switchboard" || o.transport != "tcp" || !o.tlsCa.empty() || o.clusterNodes > 0 ||
       (o.scenario != "connect" && o.scenario != "throughput" && o.scenario != "latency"))) {
    std::cerr << "sbbench: --generator lean runs connect, throughput and latency against one "
                 "Switchboard host over plain tcp\n";
    return 2;
  }
  if (o.tlsCa.empty() != o.tlsCert.empty() || o.tlsCa.empty() != o.tlsKey.empty()) {
    std::cerr << "sbbench: --tls-ca, --tls-cert and --tls-key go together\n";
    return 2;
  }
  if (!o.tlsCa.empty() && (o.peer != "switchboard" || o.transport != "tcp")) {
    std::cerr << "sbbench: TLS is for Switchboard phones over --transport tcp\n";
    return 2;
  }

  fs::path exeDir = executableDir();
  if (o.serverBinary.empty()) o.serverBinary = exeDir / ".." / "host" / "switchboard";
  if (o.pluginDir.empty()) o.pluginDir = exeDir / ".." / "plugins";
  if (o.benchDir.empty()) o.benchDir = SBBENCH_SOURCE_DIR;
  if (o.count == 0) {
    std::cerr << "sbbench: give a count (see --help)\n";
    return 2;
  }
  if (o.clusterNodes > 0 &&
      (o.peer != "switchboard" || o.transport != "tcp" || o.scenario == "dbsize")) {
    std::cerr << "sbbench: --cluster-nodes is for Switchboard phones over tcp, not dbsize\n";
    return 2;
  }
  if (o.pin) pinToCpu(1);

  fs::path runDir;
  bool keep = !o.keepDir.empty();
  if (keep) {
    runDir = o.keepDir;
    fs::create_directories(runDir);
  } else {
    char pattern[] = "/tmp/sbbench-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return 1;
    runDir = pattern;
  }

  ReportFields r;
  r.set("scenario", o.scenario);
  r.set("peer", o.peer);
  // Who made the load: Switchboard's full or lean phones, or the peer's client.
  r.set("generator", o.peer == "mosquitto"  ? "libmosquitto"
                     : o.peer == "ejabberd" ? "xmpp"
                                            : o.generator);
  r.set("count", o.count);
  r.set("procs", o.procs);
  r.set("pinned", o.pin ? 1 : 0);
  if (o.clusterNodes > 0) {
    r.set("cluster_nodes", o.clusterNodes);
    if (o.scenario != "connect") r.set("pair_nodes", o.pairNodes);
  }
  r.set("tls", o.tlsCa.empty() ? 0 : 1);
  int code = 0;
  try {
    if (o.scenario == "groups") {
      std::vector<std::uint32_t> sizes = o.groupSize != 0 ? std::vector<std::uint32_t>{o.groupSize}
                                                          : std::vector<std::uint32_t>{10, 256};
      for (std::uint32_t size : sizes) {
        BenchOptions sub = o;
        sub.groupSize = size;
        fs::path dir = runDir / ("groups-" + std::to_string(size));
        fs::create_directories(dir);
        report(sub, runOnce(sub, dir), r, "g" + std::to_string(size) + "_");
      }
    } else {
      report(o, runOnce(o, runDir), r, "");
    }
  } catch (const std::exception& e) {
    r.set("error", std::string(e.what()));
    std::cerr << "sbbench: " << e.what() << " (run directory " << runDir.string() << ")\n";
    keep = true;
    code = 1;
  }
  if (o.json) {
    std::cout << r.toJson() << std::endl;
  } else {
    printHuman(o, r);
  }
  if (!keep) fs::remove_all(runDir);
  return code;
}
