// What one sbbench run is asked to do, shared by the coordinator and its workers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace switchboard::bench {

// The command line, parsed once in the coordinator; a forked worker gets a copy with its
// own index and the server's address filled in.
struct BenchOptions {
  std::string scenario;  // connect, throughput, latency, swap, offline, groups, dbsize
  // N phones / P pairs / RATE msgs/s / phone budget for groups / N messages for dbsize
  std::uint64_t count = 0;
  std::string peer = "switchboard";  // or mosquitto, ejabberd
  std::string transport = "tcp";     // Switchboard phones: tcp, or ws (the web endpoint)
  // Switchboard phones: full (capnp's RpcSystem per phone, phone_load.h) or lean (rpc.capnp
  // frames on one epoll loop, lean_phone.h; connect, throughput and latency over tcp).
  std::string generator = "full";
  int procs = 1;     // worker processes
  bool pin = false;  // server on CPU 0, workers on CPU 1
  bool json = false;
  double seconds = 5;  // measured window (throughput, latency, groups; swap per phase)
  double warmupSeconds = 0.5;
  double holdSeconds = 1;    // connect: how long the sessions stay idle after the last login
  std::uint32_t window = 8;  // messages in flight per pair until the partner has them
  std::uint32_t pairs = 64;  // pairs carrying the load in latency, swap and dbsize
  std::uint32_t bodyBytes = 64;
  std::uint32_t swapRounds = 3;        // load + rollback of each kind, this many times
  std::uint32_t offlineMessages = 20;  // per pair
  std::uint32_t groupSize = 0;         // set per sub-run of `groups`
  std::uint32_t serverThreads = 1;
  std::uint32_t concurrency = 64;      // registrations/logins in flight per worker
  std::string keepDir;                 // keep the run directory here (logs) instead of a temp dir
  std::filesystem::path serverBinary;  // switchboard host
  std::filesystem::path pluginDir;
  std::filesystem::path benchDir;  // peers' configuration templates (bench/ in the source)
  std::string serverPrefix;        // put before the server's command (a profiler), split on spaces
  // A cluster (docs/cluster.md): this many Switchboard nodes joined by a nats-server of the
  // run's own; 0 is one host and no NATS. Phones are spread over the nodes, and the two
  // phones of a pair sit on different nodes ("cross") or on the same one ("same").
  int clusterNodes = 0;
  std::string pairNodes = "cross";
  // TLS on the phone port (Switchboard over tcp): the host is started with tlsCert/tlsKey and
  // the phones trust tlsCa, expecting the certificate to name serverHost. All or none.
  std::string tlsCa;
  std::string tlsCert;
  std::string tlsKey;

  // Filled in for workers.
  int workerIndex = 0;
  std::string serverHost = "127.0.0.1";
  int serverPort = 0;
  std::filesystem::path codeLog;  // the host's log, where the dev SMS sink prints codes
  std::vector<int> nodePorts;     // a cluster: each node's phone port (serverPort unused)
  std::vector<std::filesystem::path> nodeLogs;  // and each node's log (codes sent there)
  std::string xmppDomain = "bench.localhost";
};

// The i-th of `workers` shares of `total` (the first total % workers shares get one more):
// what one worker carries of a run's phones, pairs or messages.
inline std::uint64_t shareOf(std::uint64_t total, int workers, int index) {
  auto k = static_cast<std::uint64_t>(workers);
  auto i = static_cast<std::uint64_t>(index);
  return total / k + (i < total % k ? 1 : 0);
}

}  // namespace switchboard::bench
