#include "peer_servers.h"

#include "xmpp_load.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace switchboard::bench {

namespace fs = std::filesystem;

int freeLocalPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

bool portOpen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return open;
}

// Copies a template from bench/ into the run directory with @KEY@ placeholders replaced.
fs::path writeConfig(const fs::path& from, const fs::path& to,
                     const std::vector<std::pair<std::string, std::string>>& values) {
  std::ifstream in(from);
  if (!in) throw std::runtime_error("missing configuration template " + from.string());
  std::stringstream text;
  text << in.rdbuf();
  std::string config = text.str();
  for (const auto& [key, value] : values) {
    std::string placeholder = "@" + key + "@";
    for (auto at = config.find(placeholder); at != std::string::npos;
         at = config.find(placeholder)) {
      config.replace(at, placeholder.size(), value);
    }
  }
  std::ofstream(to) << config;
  return to;
}

// The Switchboard host's command line for the benchmark (the server prefix first), serving
// phones on `listen` and WebSocket phones on `webListen` ("" for none), with `extra` flags.
std::vector<std::string> switchboardCommand(const BenchOptions& options, const fs::path& data,
                                            const std::string& listen, const std::string& webListen,
                                            const std::vector<std::string>& extra) {
  std::vector<std::string> argv{
      options.serverBinary.string(), "--listen", listen, "--web-listen", webListen, "--data-dir",
      data.string(), "--admin-socket", (data / "admin.sock").string(), "--plugin-dir",
      options.pluginDir.string(), "--threads", std::to_string(options.serverThreads), "--log-level",
      "info",
      // Registration is rate limited per peer address; the benchmark registers thousands.
      "--plugin-setting", "auth.max-requests-per-peer=1000000", "--probation-seconds", "1",
      // The metrics endpoint's default port is fixed: give each run its own.
      "--metrics-listen", "127.0.0.1:" + std::to_string(freeLocalPort())};
  if (!options.tlsCert.empty()) {
    argv.insert(argv.end(), {"--tls-cert", options.tlsCert, "--tls-key", options.tlsKey});
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::istringstream prefix(options.serverPrefix);
  std::vector<std::string> command{std::istream_iterator<std::string>(prefix), {}};
  command.insert(command.end(), argv.begin(), argv.end());
  return command;
}

bool logHas(const fs::path& log, const std::string& text) {
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(text) != std::string::npos) return true;
  }
  return false;
}

// docs/cluster.md, "Running three nodes on one machine": a nats-server with JetStream in the
// run directory, then nodes n0..nN-1 on fresh data directories, each waited for until it
// listens and has joined NATS (registration needs the cluster's directory).
void startCluster(const BenchOptions& options, const fs::path& runDir, PeerServer& server) {
  int cpu = options.pin ? 0 : -1;
  fs::path natsDir = runDir / "nats";
  fs::create_directories(natsDir);
  int natsPort = freeLocalPort();
  server.port = natsPort;
  server.logPath = natsDir / "nats.log";
  server.process->start({"nats-server", "-a", "127.0.0.1", "-p", std::to_string(natsPort), "-js",
                         "-sd", (natsDir / "jetstream").string()},
                        server.logPath, cpu);
  server.process->waitForPort("127.0.0.1", natsPort, std::chrono::seconds(30));
  std::string url = "nats://127.0.0.1:" + std::to_string(natsPort);
  for (int i = 0; i < options.clusterNodes; ++i) {
    std::string name = "n" + std::to_string(i);
    ClusterNode node;
    node.process = std::make_unique<ServerProcess>();
    node.port = freeLocalPort();
    node.logPath = runDir / (name + ".log");
    fs::path data = runDir / name;
    fs::create_directories(data);
    node.process->start(switchboardCommand(options, data, "127.0.0.1:" + std::to_string(node.port),
                                           "", {"--cluster", url, "--node-name", name}),
                        node.logPath, cpu);
    server.nodes.push_back(std::move(node));
  }
  for (auto& node : server.nodes) {
    node.process->waitForPort("127.0.0.1", node.port, std::chrono::seconds(120));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!logHas(node.logPath, "cluster: connected to NATS")) {
      if (std::chrono::steady_clock::now() > deadline || !node.process->running()) {
        throw std::runtime_error("node on port " + std::to_string(node.port) +
                                 " did not join NATS (see " + node.logPath.string() + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

}  // namespace

std::vector<pid_t> serverPids(const PeerServer& server) {
  std::vector<pid_t> pids{server.process->pid()};
  for (const auto& node : server.nodes) pids.push_back(node.process->pid());
  return pids;
}

PeerServer startPeer(const BenchOptions& options, const fs::path& runDir) {
  PeerServer server;
  server.port = freeLocalPort();
  server.process = std::make_unique<ServerProcess>();
  server.logPath = runDir / (options.peer + ".log");
  int cpu = options.pin ? 0 : -1;
  std::string port = std::to_string(server.port);
  if (options.peer == "switchboard" && options.clusterNodes > 0) {
    startCluster(options, runDir, server);
  } else if (options.peer == "switchboard") {
    fs::path data = runDir / "data";
    fs::create_directories(data);
    // --transport ws: phones reach the web endpoint on `port` (WebSocket RPC on /rpc).
    bool ws = options.transport == "ws";
    std::string phonePort = ws ? std::to_string(freeLocalPort()) : port;
    server.process->start(switchboardCommand(options, data, "127.0.0.1:" + phonePort,
                                             ws ? "127.0.0.1:" + port : "", {}),
                          server.logPath, cpu);
    server.process->waitForPort("127.0.0.1", server.port, std::chrono::seconds(120));
  } else if (options.peer == "mosquitto") {
    fs::path config = writeConfig(options.benchDir / "mosquitto.conf", runDir / "mosquitto.conf",
                                  {{"PORT", port}});
    server.process->start({"mosquitto", "-c", config.string()}, server.logPath, cpu);
    server.process->waitForPort("127.0.0.1", server.port, std::chrono::seconds(30));
  } else if (options.peer == "ejabberd") {
    server.stopEpmdAfter = !portOpen(4369);
    startEjabberd(options, runDir, server);
  } else {
    throw std::runtime_error("unknown peer " + options.peer);
  }
  return server;
}

void stopPeer(PeerServer& server) {
  for (auto& node : server.nodes) node.process->stop(std::chrono::milliseconds(60000));
  server.process->stop(std::chrono::milliseconds(60000));
  if (server.stopEpmdAfter) {
    // epmd refuses -kill while a node is still registered; the node's exit takes a moment.
    for (int attempt = 0; attempt < 50 && portOpen(4369); ++attempt) {
      ServerProcess epmd;
      epmd.start({"epmd", "-kill"}, server.logPath, -1);
      for (int i = 0; i < 100 && epmd.running(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

}  // namespace switchboard::bench
