// Starting the server under test: the Switchboard host, mosquitto or ejabberd.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "bench_options.h"
#include "server_process.h"

namespace switchboard::bench {

// One Switchboard node of a cluster run: its phone port and its log (the SMS codes).
struct ClusterNode {
  std::unique_ptr<ServerProcess> process;
  int port = 0;
  std::filesystem::path logPath;
};

// A running server on 127.0.0.1:port, stopped when `process` is destroyed. `logPath` holds
// its stdout and stderr (for Switchboard also the development SMS sink's codes). With
// --cluster-nodes, `process` is the nats-server and `nodes` the Switchboard nodes.
struct PeerServer {
  std::unique_ptr<ServerProcess> process;
  int port = 0;
  std::filesystem::path logPath;
  // ejabberd starts Erlang's epmd daemon, which outlives it: when no epmd ran before this
  // run, stopPeer() stops it again.
  bool stopEpmdAfter = false;
  std::vector<ClusterNode> nodes;
};

// The processes whose CPU and memory are the server's: `process`, then each node.
std::vector<pid_t> serverPids(const PeerServer& server);

// Stops the server (a cluster's nodes first, then its nats-server), then (for ejabberd) the
// epmd it started.
void stopPeer(PeerServer& server);

// Starts options.peer with its configuration from options.benchDir written into `runDir`,
// pinned to CPU 0 with --pin, and waits until it listens (a cluster's nodes: until each has
// joined NATS). Throws std::runtime_error.
PeerServer startPeer(const BenchOptions& options, const std::filesystem::path& runDir);

// A TCP port on 127.0.0.1 that was free a moment ago.
int freeLocalPort();

}  // namespace switchboard::bench
