#pragma once
// Accepting Cap'n Proto RPC connections on an endpoint, across network threads.

#include "net/connection_limits.h"
#include "net/endpoint.h"

#include <capnp/capability.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kj {
class TlsContext;
}

namespace switchboard::net {

class NetworkThread;
class RpcListener;

// Who is on the other end of one accepted connection.
struct ConnectionInfo {
  std::string peer;           // "1.2.3.4:5678", "[::1]:5678" or "unix"
  size_t threadIndex = 0;     // index into the listener's threads: the loop serving it
  uint64_t connectionId = 0;  // unique within the listener, from 1
  // The listener that accepted it (null for connections that come another way, such as
  // the web endpoint's). Usable from the first call on: a listener accepts from its
  // constructor on, before whoever builds it has stored it anywhere.
  RpcListener* listener = nullptr;
};

// Makes the bootstrap capability for a new connection. Called on the connection's loop
// thread (so concurrently from different threads) as the connection is accepted (a throw
// refuses the connection); without ConnectionLimits::holdBootstrap, also for each Bootstrap
// the peer sends after its first (a throw fails that Bootstrap).
using BootstrapFactory = std::function<capnp::Capability::Client(const ConnectionInfo&)>;
// Called on the connection's loop thread after a connection has ended and its RPC state
// (and so the bootstrap capability's server objects) has been released.
using DisconnectHook = std::function<void(const ConnectionInfo&)>;

// Listens on "HOST:PORT" or a Unix socket path and serves each accepted socket as a
// two-party Cap'n Proto RPC connection (a ServerVatNetwork + makeRpcServer) over AsioStream.
//
// TCP: every thread owns its own acceptor bound with SO_REUSEPORT, so the kernel spreads
// connections and each connection lives on the thread that accepted it. Unix: one acceptor,
// on the first thread, which also serves its connections; the socket file is removed on stop.
//
// Every connection is held to `limits` (connection_limits.h): a message too large or too
// deep, or too many calls in flight, disconnects it; past the login deadline a connection not
// marked logged in is closed; a peer address over its connection bound is refused at accept.
// Each is logged (at most a few lines a second per thread, the rest counted in the next line).
//
// TLS: given a context (tls_context.h), every accepted socket first completes a TLS handshake
// as the server, under the login deadline; only then are the bootstrap capability and the RPC
// state made, and the connection counted. A failed handshake (a plaintext client, a client
// that does not trust the certificate, garbage) is logged and closed and costs nothing else.
//
// Out of descriptors (EMFILE/ENFILE) or memory (ENOBUFS/ENOMEM), an acceptor stops accepting
// for 100 ms at a time, leaving new connections in the kernel backlog, while its thread goes
// on serving the live ones; the failure is logged at most once per 10 s.
//
// Lifetime: the constructor binds (on the calling thread; failure throws std::runtime_error
// "cannot listen on 127.0.0.1:5222: Address already in use") and starts accepting. The
// threads are not owned; they must be running from construction until stop(). Per-thread
// state lives on its thread and is destroyed there by stop(), so stop() (or the destructor)
// must run before the threads stop, from a thread that is not one of them.
class RpcListener {
 public:
  RpcListener(std::vector<NetworkThread*> threads, std::string_view endpoint,
              BootstrapFactory bootstrapFactory, DisconnectHook onDisconnect = {},
              ConnectionLimits limits = {}, std::shared_ptr<kj::TlsContext> tls = nullptr);
  ~RpcListener();
  RpcListener(const RpcListener&) = delete;
  RpcListener& operator=(const RpcListener&) = delete;

  // The bound TCP port (the real one when asked for port 0); 0 for a Unix socket.
  uint16_t port() const { return port_; }
  // The endpoint as bound, e.g. "127.0.0.1:41234" for "127.0.0.1:0".
  std::string boundEndpoint() const;
  size_t connectionCount() const { return connections_.load(); }

  // Closes the acceptors; live connections keep being served.
  void stopAccepting();
  // Drops every live connection at once (peers see the socket close; the thread's RPC system
  // is made anew); accepting is unaffected.
  void disconnectAll();
  // Drops one connection: at the next turn of its loop the socket is shut both ways (the peer
  // sees it close), and once the thread's RPC system has let go of it (its pending read saw
  // the shutdown) its state is released and the disconnect hook runs. Any thread, while the
  // listener exists; asked at once on the connection's own thread, else posted there. An
  // unknown or already ended connection is ignored.
  void disconnect(size_t threadIndex, uint64_t connectionId);
  // Lifts the login deadline of one connection: it has proved who it is. Same threading as
  // disconnect(); an unknown connection is ignored.
  void markLoggedIn(size_t threadIndex, uint64_t connectionId);
  const ConnectionLimits& limits() const { return limits_; }
  // stopAccepting() + disconnectAll() + release per-thread state. Idempotent.
  void stop();

 private:
  struct ThreadState;
  struct Connection;

  void onEachThread(const std::function<void(ThreadState&)>& fn);
  void onConnectionThread(size_t threadIndex, std::function<void(ThreadState&)> fn);
  // The per-address bound: false (and nothing counted) when `address` is at it.
  bool admitPeer(const std::string& address);
  void releasePeer(const std::string& address);

  std::vector<NetworkThread*> threads_;  // not owned
  Endpoint endpoint_;
  uint16_t port_ = 0;
  BootstrapFactory bootstrapFactory_;
  DisconnectHook onDisconnect_;
  const ConnectionLimits limits_;
  const std::shared_ptr<kj::TlsContext> tls_;  // null: plaintext
  std::mutex peersMutex_;
  std::unordered_map<std::string, size_t> connectionsByPeer_;  // only with a per-peer bound
  std::vector<std::unique_ptr<ThreadState>> states_;           // states_[i] lives on threads_[i]
  std::atomic<size_t> connections_{0};
  std::atomic<uint64_t> nextConnectionId_{0};
  bool stopped_ = false;
};

}  // namespace switchboard::net
