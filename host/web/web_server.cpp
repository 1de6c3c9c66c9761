#include "web/web_server.h"

#include "net/accept_loop.h"
#include "net/asio_stream.h"
#include "net/asio_timer.h"
#include "net/network_thread.h"
#include "net/two_party_connection.h"
#include "web/websocket_vat_network.h"

#include <capnp/compat/websocket-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <kj/compat/http.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

namespace switchboard::web {
namespace {

// Out of descriptors or memory, an acceptor pauses this long instead of spinning.
constexpr std::chrono::seconds kFailureWarningInterval{10};
// Largest static file served (the app is a few hundred KB).
constexpr std::size_t kMaxFileBytes = 8 << 20;

std::string_view contentType(const std::filesystem::path& path) {
  static const std::map<std::string, std::string_view> types = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".json", "application/json"},
      {".webmanifest", "application/manifest+json"},
      {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
  };
  auto it = types.find(path.extension().string());
  return it == types.end() ? std::string_view("application/octet-stream") : it->second;
}

std::optional<std::string_view> header(const kj::HttpHeaders& headers, kj::HttpHeaderId id) {
  KJ_IF_MAYBE (value, headers.get(id)) {
    return std::string_view(value->cStr(), value->size());
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> splitList(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    auto begin = item.find_first_not_of(" \t");
    if (begin == std::string::npos) continue;
    auto end = item.find_last_not_of(" \t");
    items.push_back(item.substr(begin, end - begin + 1));
  }
  return items;
}

// What every thread reads and nobody changes after construction.
struct WebServer::Shared {
  Shared(WebServerOptions options, net::BootstrapFactory factory)
      : options(std::move(options)),
        access(this->options.allowedOrigins, this->options.trustedProxies),
        bootstrapFactory(std::move(factory)) {
    kj::HttpHeaderTable::Builder builder;
    origin = builder.add("Origin");
    forwardedFor = builder.add("X-Forwarded-For");
    cacheControl = builder.add("Cache-Control");
    contentTypeOptions = builder.add("X-Content-Type-Options");
    securityPolicy = builder.add("Content-Security-Policy");
    table = builder.build();
  }

  WebServerOptions options;
  WebAccess access;
  net::BootstrapFactory bootstrapFactory;
  kj::Own<kj::HttpHeaderTable> table;
  kj::HttpHeaderId origin = kj::HttpHeaderId::HOST;
  kj::HttpHeaderId forwardedFor = kj::HttpHeaderId::HOST;
  kj::HttpHeaderId cacheControl = kj::HttpHeaderId::HOST;
  kj::HttpHeaderId contentTypeOptions = kj::HttpHeaderId::HOST;
  kj::HttpHeaderId securityPolicy = kj::HttpHeaderId::HOST;
};

// One phone's RPC over one accepted WebSocket; its Finishes wait in `flush` (the thread's) as
// the TCP phone port's do (websocket_vat_network.h).
struct WebServer::RpcConnection {
  RpcConnection(WebServer& server, kj::Own<kj::WebSocket> socket, net::FinishFlush& flush,
                capnp::Capability::Client bootstrap)
      : server(server),
        socket(kj::mv(socket)),
        network(*this->socket, flush),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {
    server.rpcConnections_.fetch_add(1);
  }
  ~RpcConnection() { server.rpcConnections_.fetch_sub(1); }

  WebServer& server;
  kj::Own<kj::WebSocket> socket;
  WebSocketVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// ---------------------------------------------------------------------------- ThreadState

struct WebServer::ThreadState final : private kj::TaskSet::ErrorHandler {
  ThreadState(WebServer& server, std::size_t index, net::NetworkThread& thread)
      : server(server),
        shared(*server.shared_),
        index(index),
        thread(thread),
        timer(thread.ioContext()),
        finishFlush(timer),
        http(timer, *shared.table,
             [this](kj::AsyncIoStream& stream) { return serviceFor(stream); }) {
    connections.emplace(static_cast<kj::TaskSet::ErrorHandler&>(*this));
  }

  void startAccepting(int fd) {
    acceptor.emplace(thread.ioContext(), fd);
    acceptTask = net::acceptConnections(
        *acceptor, [this](int accepted, std::string peer) { serve(accepted, std::move(peer)); },
        [this](int error) { reportFailure(error); });
  }

  void stopAccepting() {
    acceptTask = nullptr;
    acceptor.reset();
  }

  void dropConnections() { connections.reset(); }

  // At most one line per kFailureWarningInterval while accepting keeps failing.
  void reportFailure(int error) {
    auto now = std::chrono::steady_clock::now();
    if (now < nextFailureWarning) return;
    nextFailureWarning = now + kFailureWarningInterval;
    spdlog::warn("web: accept on {} failed: {}; pausing {} ms at a time", server.endpoint_.text(),
                 std::strerror(error), net::kAcceptBackoff.count());
  }

  void serve(int fd, std::string peer) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto stream = kj::heap<net::AsioStream>(thread.ioContext(), fd);
    const kj::AsyncIoStream* key = stream.get();
    peers[key] = std::move(peer);
    connections->add(
        http.listenHttp(kj::mv(stream)).attach(kj::defer([this, key] { peers.erase(key); })));
  }

  // The service for one accepted connection; defined below ConnectionService.
  kj::Own<kj::HttpService> serviceFor(kj::AsyncIoStream& stream);

  void disconnect(std::uint64_t connectionId) {
    auto it = cuts.find(connectionId);
    if (it != cuts.end()) it->second->fulfill();
  }

  void taskFailed(kj::Exception&& exception) override {
    spdlog::debug("web connection ended with error: {}", exception.getDescription().cStr());
  }

  WebServer& server;
  const Shared& shared;
  const std::size_t index;
  net::NetworkThread& thread;
  net::AsioTimer timer;
  net::FinishFlush finishFlush;  // the held Finishes of the thread's RPC WebSockets
  std::map<const kj::AsyncIoStream*, std::string> peers;  // socket peer of each connection
  std::map<std::uint64_t, kj::Own<kj::PromiseFulfiller<void>>> cuts;  // by connection id
  kj::HttpServer http;
  std::optional<asio::posix::stream_descriptor> acceptor;
  kj::Promise<void> acceptTask = nullptr;
  std::chrono::steady_clock::time_point nextFailureWarning;
  std::optional<kj::TaskSet> connections;  // the HTTP connections; before `http` dies
};

// ------------------------------------------------------------------------ ConnectionService

// Serves the requests of one HTTP connection (made by the HttpServer's factory).
class WebServer::ConnectionService final : public kj::HttpService {
 public:
  ConnectionService(ThreadState& state, std::string socketPeer)
      : state_(state), shared_(state.shared), socketPeer_(std::move(socketPeer)) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream&,
                            Response& response) override {
    std::string path(url.cStr());
    if (auto query = path.find_first_of("?#"); query != std::string::npos) path.resize(query);
    if (path == "/rpc") return serveRpc(headers, response);
    if (method != kj::HttpMethod::GET) {
      return sendText(response, 405, "Method Not Allowed", "only GET is served here\n");
    }
    return serveFile(path, response);
  }

 private:
  kj::Promise<void> sendText(Response& response, unsigned status, kj::StringPtr statusText,
                             std::string text) {
    kj::HttpHeaders headers(*shared_.table);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "text/plain; charset=utf-8");
    auto body = kj::heap<std::string>(std::move(text));
    auto out = response.send(status, statusText, headers, body->size());
    auto written = out->write(body->data(), body->size());
    return written.attach(kj::mv(out), kj::mv(body));
  }

  kj::Promise<void> serveRpc(const kj::HttpHeaders& headers, Response& response) {
    if (!headers.isWebSocket()) {
      return sendText(response, 400, "Bad Request",
                      "/rpc speaks Cap'n Proto RPC over WebSocket only\n");
    }
    if (auto refusal = shared_.access.refuseOrigin(header(headers, shared_.origin),
                                                   header(headers, kj::HttpHeaderId::HOST))) {
      spdlog::info("web: refused a WebSocket from {}: {}", socketPeer_, *refusal);
      return sendText(response, 403, "Forbidden", *refusal + "\n");
    }
    WebServer& server = state_.server;
    net::ConnectionInfo info{
        shared_.access.effectivePeer(socketPeer_, header(headers, shared_.forwardedFor)),
        state_.index, server.nextConnectionId_.fetch_add(1)};
    kj::Maybe<capnp::Capability::Client> bootstrap;
    try {
      bootstrap = shared_.bootstrapFactory(info);
    } catch (std::exception& exception) {
      spdlog::warn("web: refused a WebSocket from {}: {}", info.peer, exception.what());
      return sendText(response, 503, "Service Unavailable", std::string(exception.what()) + "\n");
    }
    kj::HttpHeaders responseHeaders(*shared_.table);
    auto socket = response.acceptWebSocket(responseHeaders);
    auto connection = kj::heap<RpcConnection>(server, kj::mv(socket), state_.finishFlush,
                                              kj::mv(KJ_ASSERT_NONNULL(bootstrap)));
    // The WebSocket lives as long as this request: until the peer goes, or disconnect() cuts.
    auto cut = kj::newPromiseAndFulfiller<void>();
    std::uint64_t id = info.connectionId;
    state_.cuts[id] = kj::mv(cut.fulfiller);
    ThreadState& state = state_;
    return connection->network.onDisconnect()
        .exclusiveJoin(kj::mv(cut.promise))
        .attach(kj::mv(connection), kj::defer([&state, id] { state.cuts.erase(id); }));
  }

  kj::Promise<void> serveFile(std::string path, Response& response) {
    const auto& root = shared_.options.root;
    if (root.empty()) {
      return sendText(response, 404, "Not Found",
                      "the web app is not built here: build it (cmake --build) or give "
                      "--web-root\n");
    }
    if (path == "/" || path.empty()) path = "/index.html";
    if (path.find("..") != std::string::npos || path.find('\0') != std::string::npos ||
        path.front() != '/') {
      return sendText(response, 404, "Not Found", "no such file\n");
    }
    std::filesystem::path file = root / path.substr(1);
    std::error_code error;
    auto size = std::filesystem::file_size(file, error);
    if (error || !std::filesystem::is_regular_file(file, error) || size > kMaxFileBytes) {
      return sendText(response, 404, "Not Found", "no such file\n");
    }
    auto body = kj::heap<std::string>(size, '\0');
    std::ifstream in(file, std::ios::binary);
    if (!in.read(body->data(), static_cast<std::streamsize>(size))) {
      return sendText(response, 404, "Not Found", "no such file\n");
    }
    kj::HttpHeaders headers(*shared_.table);
    auto type = contentType(file);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, kj::StringPtr(type.data(), type.size()));
    headers.set(shared_.cacheControl, "no-cache");
    headers.set(shared_.contentTypeOptions, "nosniff");
    headers.set(shared_.securityPolicy,
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                "frame-ancestors 'none'");
    auto out = response.send(200, "OK", headers, body->size());
    auto written = out->write(body->data(), body->size());
    return written.attach(kj::mv(out), kj::mv(body));
  }

  ThreadState& state_;
  const Shared& shared_;
  const std::string socketPeer_;
};

kj::Own<kj::HttpService> WebServer::ThreadState::serviceFor(kj::AsyncIoStream& stream) {
  auto it = peers.find(&stream);
  return kj::heap<ConnectionService>(*this, it == peers.end() ? "unknown" : it->second);
}

// ------------------------------------------------------------------------------ WebServer

WebServer::WebServer(std::vector<net::NetworkThread*> threads, WebServerOptions options,
                     net::BootstrapFactory bootstrapFactory)
    : threads_(std::move(threads)),
      endpoint_(net::Endpoint::parse(options.listen)),
      shared_(std::make_unique<Shared>(std::move(options), std::move(bootstrapFactory))) {
  if (threads_.empty()) throw std::invalid_argument("WebServer needs at least one thread");
  if (endpoint_.kind != net::Endpoint::Kind::kTcp) {
    throw std::runtime_error("--web-listen wants HOST:PORT, got " + endpoint_.text());
  }
  std::vector<int> fds;
  try {
    // Claim the port exclusively first (see RpcListener): "Address already in use" and port 0.
    int probe = net::openListeningSocket(endpoint_, false);
    port_ = net::localPort(probe);
    ::close(probe);
    net::Endpoint samePort = endpoint_;
    samePort.port = port_;
    for (std::size_t i = 0; i < threads_.size(); ++i)
      fds.push_back(net::openListeningSocket(samePort, true));
  } catch (...) {
    for (int fd : fds) ::close(fd);
    throw;
  }
  states_.resize(threads_.size());
  for (std::size_t i = 0; i < threads_.size(); ++i) {
    try {
      threads_[i]->runSync([this, i, fd = fds[i]] {
        states_[i] = std::make_unique<ThreadState>(*this, i, *threads_[i]);
        states_[i]->startAccepting(fd);
      });
    } catch (...) {
      for (std::size_t j = i + 1; j < fds.size(); ++j) ::close(fds[j]);
      stop();
      throw;
    }
  }
}

WebServer::~WebServer() {
  stop();
}

std::string WebServer::boundEndpoint() const {
  net::Endpoint bound = endpoint_;
  bound.port = port_;
  return bound.text();
}

void WebServer::disconnect(std::size_t threadIndex, std::uint64_t connectionId) {
  if (threadIndex >= threads_.size()) return;
  auto cut = [this, threadIndex, connectionId] {
    if (states_[threadIndex]) states_[threadIndex]->disconnect(connectionId);
  };
  if (threads_[threadIndex]->isCurrent()) {
    cut();
  } else {
    threads_[threadIndex]->post(cut);
  }
}

void WebServer::stopAccepting() {
  for (std::size_t i = 0; i < threads_.size(); ++i) {
    if (!states_[i]) continue;
    try {
      threads_[i]->runSync([this, i] { states_[i]->stopAccepting(); });
    } catch (std::exception& exception) {
      spdlog::error("web {}: thread {} unavailable: {}", endpoint_.text(), i, exception.what());
    }
  }
}

void WebServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (std::size_t i = 0; i < threads_.size(); ++i) {
    if (!states_[i]) continue;
    try {
      threads_[i]->runSync([this, i] {
        states_[i]->stopAccepting();
        states_[i]->dropConnections();
        states_[i].reset();
      });
    } catch (std::exception& exception) {
      spdlog::error("web {}: thread {} stopped first; leaking its state: {}", endpoint_.text(), i,
                    exception.what());
      [[maybe_unused]] ThreadState* leaked = states_[i].release();
    }
  }
}

}  // namespace switchboard::web
