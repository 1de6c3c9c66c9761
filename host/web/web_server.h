// The web endpoint: one HTTP port that serves the web app's static files at / and phones'
// Cap'n Proto RPC at /rpc, one RPC message per binary WebSocket message
// (capnp::WebSocketMessageStream). Each RPC WebSocket gets its bootstrap capability from the
// same factory as the TCP phone listener, so a browser is a phone like any other.
//
// Threads: like net::RpcListener, every network thread owns an acceptor on the port
// (SO_REUSEPORT) and serves the connections it accepted, with its own kj::HttpServer and
// net::AsioTimer. The /rpc handshake checks the Origin and works out the peer address as
// web::WebAccess says (docs/web.md).
//
// Connection ids of web connections start at kFirstWebConnectionId, so they never collide
// with the TCP listener's (which count from 1); ownsConnection() tells them apart.
//
// Lifetime: the constructor binds (failure throws std::runtime_error "cannot listen on ...")
// and starts accepting. The threads must run until stop() (or the destructor), which must be
// called from a thread that is not one of them.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "net/endpoint.h"
#include "net/rpc_listener.h"
#include "web/web_access.h"

namespace switchboard::net {
class NetworkThread;
}

namespace switchboard::web {

constexpr std::uint64_t kFirstWebConnectionId = std::uint64_t(1) << 62;

struct WebServerOptions {
  std::string listen;                       // "HOST:PORT"
  std::filesystem::path root;               // static files; empty: none (/ answers 404)
  std::vector<std::string> allowedOrigins;  // see WebAccess
  std::vector<std::string> trustedProxies;  // see WebAccess
};

class WebServer {
 public:
  WebServer(std::vector<net::NetworkThread*> threads, WebServerOptions options,
            net::BootstrapFactory bootstrapFactory);
  ~WebServer();
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  // The endpoint as bound, e.g. "127.0.0.1:41234" for "127.0.0.1:0".
  std::string boundEndpoint() const;
  // Live RPC WebSockets.
  std::size_t connectionCount() const { return rpcConnections_.load(); }

  static bool ownsConnection(std::uint64_t connectionId) {
    return connectionId >= kFirstWebConnectionId;
  }
  // Closes one RPC WebSocket; any thread. Unknown or ended connections are ignored.
  void disconnect(std::size_t threadIndex, std::uint64_t connectionId);
  // Closes the acceptors; live connections keep being served.
  void stopAccepting();
  // stopAccepting() + drop every connection + release per-thread state. Idempotent.
  void stop();

 private:
  struct Shared;
  struct ThreadState;
  class ConnectionService;
  struct RpcConnection;

  std::vector<net::NetworkThread*> threads_;  // not owned
  net::Endpoint endpoint_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<ThreadState>> states_;  // states_[i] lives on threads_[i]
  std::atomic<std::size_t> rpcConnections_{0};
  std::atomic<std::uint64_t> nextConnectionId_{kFirstWebConnectionId};
  bool stopped_ = false;
};

// Splits "a, b,c" into {"a", "b", "c"} (blanks trimmed, empty items dropped).
std::vector<std::string> splitList(const std::string& text);

}  // namespace switchboard::web
