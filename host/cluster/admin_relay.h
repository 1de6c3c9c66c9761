// Plugin loads and rollbacks on other nodes: the operator talks to one node's
// admin socket, and that node forwards the operation over NATS.
//
// Subject: core NATS sb.node.<node>.admin, a request with a reply subject
// (proto/cluster.capnp PluginRequest, answered by a PluginReply). No JetStream:
// an operation is asked for now or not at all, and a lost request is reported
// as a node that did not answer, never retried behind the operator's back.
//
// - serve() answers this node's requests: each one is decoded on the libnats
//   thread and handed to `handler` on the given network thread (the admin
//   thread), which runs it through the node's own admin path and calls its
//   Answer once, from any thread. The reply is published on the link's worker.
// - send() forwards one request to a named node, or to every node in the
//   registry ("all"). It never blocks the caller nor the link's worker for the
//   operation's length (a load with its probation can take a minute, and the
//   worker carries cross-node messages): each request waits on its own
//   reply subscription with a libnats time-out, and the replies are gathered
//   as they come.
//
// Threads: serve(), stopServing() and send() from any thread. `done` and
// Answer callbacks may run on a libnats thread or the link's worker: they must
// only hand the result on (a net::Completion, a post).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct __natsSubscription;
struct __natsConnection;
struct __natsMsg;

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::cluster {

class NatsLink;
class NodeRegistry;

struct PluginRequest {
  enum class Operation : std::uint8_t { load, rollback };
  Operation operation = Operation::load;
  std::string kind;
  std::string path;     // load: a path on the target's machine
  std::string version;  // rollback: empty means the previous version
  bool waitProbation = false;
  std::string actor;  // the target's ledger actor
};

// One node's answer. `answered` false: no reply within the time-out, or the
// request could not be sent; `error` then says which, naming the node.
struct PluginReply {
  std::string node;
  bool answered = false;
  bool ok = false;
  std::string error;
  std::string fromVersion;
  std::string toVersion;
  std::string sha256;
  std::uint64_t pauseUs = 0;
};

// The subject node `node` answers plugin requests on.
std::string nodeAdminSubject(const std::string& node);

class AdminRelay {
 public:
  using Answer = std::function<void(PluginReply)>;
  using Handler = std::function<void(PluginRequest, Answer)>;
  // Replies by node name; `error` non-empty when nothing was sent (degraded,
  // a node not in the registry), and then `replies` is empty.
  using Done = std::function<void(std::vector<PluginReply> replies, std::string error)>;

  // `node` is this node's name. `link` and `registry` must outlive the relay.
  AdminRelay(NatsLink& link, NodeRegistry& registry, std::string node);
  ~AdminRelay();
  AdminRelay(const AdminRelay&) = delete;
  AdminRelay& operator=(const AdminRelay&) = delete;

  // Starts answering requests for this node: `handler` runs on `thread`.
  // Once. Needs no connection (libnats subscribes when NATS is reachable).
  void serve(net::NetworkThread& thread, Handler handler);
  // From now on `handler` is not called again: requests that arrive are not
  // answered (their senders report no answer). Returns once a handler
  // running on the thread has returned. Call from another thread than the
  // serving one, before what the handler uses goes away. Idempotent.
  void stopServing();

  // Forwards `request` to `target` (a node name, or "all"); each node has
  // `timeout` to answer. `done` runs once.
  void send(const std::string& target, PluginRequest request, std::chrono::milliseconds timeout,
            Done done);

 private:
  struct Served;
  struct Gather;
  void sendTo(const std::string& node, const std::string& bytes, std::chrono::milliseconds timeout,
              const std::shared_ptr<Gather>& gather, std::size_t slot);
  static void onRequest(__natsConnection*, __natsSubscription*, __natsMsg* msg, void* served);

  NatsLink& link_;
  NodeRegistry& registry_;
  const std::string node_;
  std::mutex mutex_;
  std::shared_ptr<Served> served_;
  __natsSubscription* subscription_ = nullptr;
};

}  // namespace switchboard::cluster
