// The host's one connection to NATS, and the thread where talking to NATS may block.
//
// A NatsLink owns a libnats connection (with its JetStream context) to the
// server named by --cluster. It never gives up on that server: a connection
// refused at start or lost later is retried every `reconnectWait`, forever.
// While it is not connected the link is *degraded*: the node keeps serving its
// own sessions, and every cluster operation fails at once with ClusterError
// instead of waiting for a time-out.
//
// Threads. libnats runs its own threads and calls back on them; nothing from
// libnats ever runs on or blocks a network thread:
// - connection-state callbacks only flip an atomic and hop: the state
//   listeners run on the owner network thread (NetworkThread::post), the
//   reconnect jobs on the link's worker thread;
// - blocking calls (KV reads and writes, JetStream publishes that wait for
//   their ack, requests) run on the worker thread: post() a job there, and let
//   the job post its result back to the thread that asked.
// The worker runs jobs one at a time in order, plus the periodic jobs given
// to every() (heartbeats); queued jobs and due periodic ones take turns, so
// neither a steady stream of jobs nor a periodic job longer than its interval
// starves the other. Destruction stops the worker (jobs already posted are
// dropped), then closes the connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

struct __natsConnection;
struct __jsCtx;

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::cluster {

// A NATS operation that could not be done; what() is one line for an operator.
class ClusterError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class LinkState { connected, degraded };
const char* linkStateName(LinkState state);  // "connected", "degraded"

struct NatsLinkOptions {
  std::string url;         // nats://HOST:PORT
  std::string clientName;  // shown by nats-server (connz)
  std::chrono::milliseconds reconnectWait{250};
  std::chrono::milliseconds operationTimeout{3000};  // JetStream/KV requests
};

class NatsLink {
 public:
  // Connects in the background: returns at once even when NATS is down (the
  // link then starts degraded). `owner` runs the state listeners and must
  // outlive the link. Throws ClusterError only for a malformed URL.
  NatsLink(NatsLinkOptions options, net::NetworkThread& owner);
  ~NatsLink();
  NatsLink(const NatsLink&) = delete;
  NatsLink& operator=(const NatsLink&) = delete;

  // Thread-safe reads.
  LinkState state() const { return connected_ ? LinkState::connected : LinkState::degraded; }
  bool isConnected() const { return connected_; }
  std::uint64_t disconnects() const { return disconnects_; }
  std::uint64_t reconnects() const { return reconnects_; }
  const NatsLinkOptions& options() const { return options_; }

  // `listener(state)` runs on the owner thread after every change (and not
  // for the state at the time of the call). Call before anything can change
  // it: right after construction.
  void addStateListener(std::function<void(LinkState)> listener);
  // `job` runs on the worker thread each time the link (re)connects: the
  // place to catch up on what was missed while degraded.
  void addReconnectJob(std::function<void()> job);

  // The worker thread. post() is thread-safe; a job that throws is logged.
  void post(std::function<void()> job);
  // Runs `job` on the worker every `interval` (first run at once).
  void every(std::chrono::milliseconds interval, std::function<void()> job);
  bool onWorker() const;
  // Stops the worker: queued jobs are dropped, a running one finishes first.
  // Idempotent; the destructor calls it. For owners whose jobs use parts
  // that must go before the connection closes.
  void stopWorker();

  // For the cluster room's components, on the worker thread (or a test's own
  // thread): the raw handles, and a guard that throws ClusterError("cluster
  // degraded: ...") unless connected.
  __natsConnection* connection() const;
  __jsCtx* jetStream() const;
  void requireConnected() const;

 private:
  struct Impl;
  static void onConnected(__natsConnection*, void* self);
  static void onDisconnected(__natsConnection*, void* self);
  static void onClosed(__natsConnection*, void* self);
  void changed(bool connected);

  const NatsLinkOptions options_;
  net::NetworkThread& owner_;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> disconnects_{0};
  std::atomic<std::uint64_t> reconnects_{0};
  std::unique_ptr<Impl> impl_;
};

// Throws ClusterError("<what>: <libnats text>") unless `status` is NATS_OK.
void requireOk(int status, const std::string& what);

}  // namespace switchboard::cluster
