#include "net/rpc_listener.h"

#include "net/accept_loop.h"
#include "net/asio_stream.h"
#include "net/asio_timer.h"
#include "net/network_thread.h"
#include "net/server_vat_network.h"

#include <capnp/rpc-twoparty.h>
#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace switchboard::net {
namespace {

// While the process (or system) is out of descriptors or memory, every accept4() fails at
// once (acceptConnections pauses; pending connections wait in the kernel backlog). The
// warning about such a pause repeats at most this often while the shortage lasts.
constexpr std::chrono::seconds kShortageWarningInterval{10};

bool isResourceShortage(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

// "1.2.3.4" for "1.2.3.4:5678", "[::1]" for "[::1]:5678"; empty for a Unix peer, which is
// never bounded per address.
std::string peerAddress(const std::string& peer) {
  auto colon = peer.rfind(':');
  return colon == std::string::npos ? std::string() : peer.substr(0, colon);
}

// Lines about misbehaving peers, at most kLinesPerSecond a second (per thread): a flood of
// bad connections must not become a flood of log lines. What was held back is counted in the
// next line that goes out.
class ThrottledLog {
 public:
  static constexpr int kLinesPerSecond = 5;

  template <class... Args>
  void warn(spdlog::format_string_t<Args...> format, Args&&... args) {
    auto now = std::chrono::steady_clock::now();
    if (now - windowStart_ >= std::chrono::seconds(1)) {
      windowStart_ = now;
      linesInWindow_ = 0;
    }
    if (linesInWindow_ >= kLinesPerSecond) {
      ++heldBack_;
      return;
    }
    ++linesInWindow_;
    std::string line = fmt::format(format, std::forward<Args>(args)...);
    if (heldBack_ > 0) {
      spdlog::warn("{} ({} similar lines held back)", line, heldBack_);
      heldBack_ = 0;
    } else {
      spdlog::warn("{}", line);
    }
  }

 private:
  std::chrono::steady_clock::time_point windowStart_;
  int linesInWindow_ = 0;
  uint64_t heldBack_ = 0;
};

}  // namespace

// ----------------------------------------------------------------------------- Connection

// One served connection, owned by its thread's ThreadState (`live`) and destroyed there, on
// its loop thread, at the turn after the thread's RPC system let go of it (the peer went, or
// disconnect() or the login deadline cut it). `ending` is declared first so it runs last,
// after the RPC state is gone. Unless the limits hold the bootstrap, a Bootstrap after the
// peer's first gets a new capability from the listener's factory (server_vat_network.h).
struct RpcListener::Connection final : private BootstrapSource {
  struct Ending {
    RpcListener& listener;
    ConnectionInfo info;
    bool counted;  // against the per-peer bound: under peerAddress(info.peer)
    ~Ending() {
      listener.connections_.fetch_sub(1);
      if (counted) listener.releasePeer(peerAddress(info.peer));
      if (!listener.onDisconnect_) return;
      try {
        listener.onDisconnect_(info);
      } catch (std::exception& exception) {
        spdlog::error("disconnect hook threw for {}: {}", info.peer, exception.what());
      }
    }
  };

  Connection(RpcListener& listener, ConnectionInfo info, bool counted,
             kj::Own<kj::AsyncIoStream> transport, int fd, capnp::Capability::Client bootstrap,
             LimitedMessageStream::ViolationHandler onViolation, std::function<void()> onEnded)
      : ending{listener, std::move(info), counted},
        stream(kj::mv(transport)),
        messages(*stream, listener.limits_, std::move(onViolation)),
        served(messages, *stream, fd, kj::mv(bootstrap),
               listener.limits_.holdBootstrap ? nullptr : this, std::move(onEnded)) {}

  capnp::Capability::Client nextBootstrap() override {
    return ending.listener.bootstrapFactory_(ending.info);
  }

  Ending ending;
  kj::Own<kj::AsyncIoStream> stream;  // an AsioStream, or a TLS stream over one
  LimitedMessageStream messages;
  ServedConnection served;
};

// ---------------------------------------------------------------------------- ThreadState

// What the listener keeps on one thread; created, used and destroyed on that thread.
//
// One RpcSystem serves every connection of the thread, over a ServerVatNetwork. Per
// connection the thread keeps one map entry: the connection (or, with TLS, the handshake until
// it is done) and whether it logged in. Login deadlines are one queue per thread in accept order
// (every connection gets the same deadline, so the queue is in deadline order too) and one
// timer for its front, not a timer per connection. A connection is dropped at the turn after
// it was asked to be (endLater): a cut may be asked from inside a call on that very
// connection (a kick), and the RPC system says a connection ended from inside its own code.
struct RpcListener::ThreadState final : private kj::TaskSet::ErrorHandler {
  ThreadState(RpcListener& listener, size_t index, NetworkThread& thread)
      : listener(listener), index(index), thread(thread), timer(thread.ioContext()) {
    openRpc();
  }

  ~ThreadState() { closeRpc(); }

  void openRpc() {
    network.emplace(timer);
    rpc.emplace(capnp::makeRpcServer(*network, *network));
    rpc->setFlowLimit(listener.limits_.callFlowLimitBytes / sizeof(capnp::word));
  }

  // Every connection ends: the RPC system goes first (it lets go of them all), then they do.
  void closeRpc() {
    rpc.reset();
    network.reset();
    auto doomedHandshakes = std::move(handshakes);
    handshakes.clear();
    doomedHandshakes.clear();
    auto doomed = std::move(live);
    live.clear();
    doomed.clear();
    deadlines.clear();
  }

  void startAccepting(int fd) {
    acceptor.emplace(thread.ioContext(), fd);
    acceptTask = acceptConnections(
        *acceptor, [this](int accepted, std::string peer) { serve(accepted, std::move(peer)); },
        [this](int error) { reportFailure(error); });
  }

  void stopAccepting() {
    acceptTask = nullptr;
    acceptor.reset();
  }

  void disconnectAll() {
    closeRpc();
    openRpc();
  }

  // At most one line per kShortageWarningInterval, however often accepting fails (with a
  // listener at the descriptor limit, a freed descriptor lets one accept through and the next
  // one fail again, so "failing" may come and go many times a second).
  void reportFailure(int error) {
    auto now = std::chrono::steady_clock::now();
    ++pausesSinceWarning;
    if (now < nextFailureWarning) return;
    nextFailureWarning = now + kShortageWarningInterval;
    auto level = isResourceShortage(error) ? spdlog::level::warn : spdlog::level::err;
    spdlog::log(level,
                "accept on {} failed: {}; {} connections open; accepting paused {} ms at a time "
                "({} pauses since the last such line)",
                listener.endpoint_.text(), std::strerror(error), listener.connections_.load(),
                kAcceptBackoff.count(), pausesSinceWarning);
    pausesSinceWarning = 0;
  }

  // A connection's place under the per-address bound: given back when dropped, unless
  // handed on to the Connection (whose Ending gives it back). Empty when not counted.
  struct PeerClaim {
    RpcListener* listener = nullptr;
    std::string address;

    PeerClaim() = default;
    PeerClaim(RpcListener& listener, std::string address)
        : listener(&listener), address(std::move(address)) {}
    PeerClaim(PeerClaim&& other) noexcept
        : listener(other.listener), address(std::exchange(other.address, {})) {}
    PeerClaim& operator=(PeerClaim&& other) noexcept {
      if (this != &other) {
        if (!address.empty()) listener->releasePeer(address);
        listener = other.listener;
        address = std::exchange(other.address, {});
      }
      return *this;
    }
    ~PeerClaim() {
      if (!address.empty()) listener->releasePeer(address);
    }
    // The Connection takes it over (its Ending gives it back): whether one was held.
    bool handOver() { return !std::exchange(address, {}).empty(); }
  };

  // TCP_NODELAY and TCP_INQ are set on the listening sockets, and Linux hands them on to the
  // accepted ones: checked on the first accepted socket (two getsockopt calls once per thread);
  // set on each socket, as before, where that does not hold.
  bool inheritsOptions(int fd) {
    if (!optionsInherited) {
      optionsInherited = socketOption(fd, IPPROTO_TCP, TCP_NODELAY) == 1 &&
                         socketOption(fd, SOL_TCP, TCP_INQ) == 1;
      if (!*optionsInherited) spdlog::info("accepted sockets do not inherit TCP_NODELAY/TCP_INQ");
    }
    return *optionsInherited;
  }

  static int socketOption(int fd, int level, int option) {
    int value = 0;
    socklen_t length = sizeof(value);
    return ::getsockopt(fd, level, option, &value, &length) == 0 ? value : -1;
  }

  void serve(int fd, std::string peer) {
    bool inherited = false;
    if (listener.endpoint_.kind == Endpoint::Kind::kTcp) {
      inherited = inheritsOptions(fd);
      int one = 1;
      if (!inherited) ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    ConnectionInfo info{std::move(peer), index, listener.nextConnectionId_.fetch_add(1) + 1,
                        &listener};
    const ConnectionLimits& limits = listener.limits_;
    PeerClaim claim;
    if (limits.maxConnectionsPerPeer > 0) {
      std::string address = peerAddress(info.peer);
      if (!address.empty() && !listener.admitPeer(address)) {
        refusals.warn("refused connection from {}: already {} connections from {}", info.peer,
                      limits.maxConnectionsPerPeer, address);
        ::close(fd);
        return;
      }
      claim = PeerClaim(listener, std::move(address));
    }
    kj::Own<AsioStream> stream;
    try {
      stream = kj::heap<AsioStream>(thread.ioContext(), fd, inherited);  // owns fd from here
    } catch (std::exception& exception) {
      spdlog::warn("refused connection from {}: {}", info.peer, exception.what());
      ::close(fd);
      return;
    }
    uint64_t id = info.connectionId;
    if (!listener.tls_) {
      int socket = fd;
      kj::Own<Connection> connection = open(info, std::move(claim), kj::mv(stream), socket);
      if (!connection) return;
      network->add(connection->served);
      live[id].connection = kj::mv(connection);
      startDeadline(id);
      return;
    }
    // TLS: the handshake runs under the login deadline and the cut, like a connection; until
    // it succeeds nothing is built for the peer (no bootstrap, no RPC state, not counted).
    auto secured = kj::evalNow([&] { return listener.tls_->wrapServer(kj::mv(stream)); });
    Handshake& handshake = handshakes[id];
    handshake.peer = info.peer;
    handshake.done =
        secured
            .then(
                [this, info, claim = std::move(claim),
                 socket = fd](kj::Own<kj::AsyncIoStream> secure) mutable {
                  uint64_t id = info.connectionId;
                  kj::Own<Connection> connection =
                      open(info, std::move(claim), kj::mv(secure), socket);
                  if (!connection) return endLater(id);
                  network->add(connection->served);
                  live[id].connection = kj::mv(connection);
                  handshakesDone.push_back(id);  // its node is released at the next turn
                  scheduleSweep();
                },
                [this, id, peer = info.peer](kj::Exception&& exception) {
                  refusals.warn("TLS handshake with {} failed: {}", peer,
                                exception.getDescription().cStr());
                  endLater(id);
                })
            .eagerlyEvaluate(nullptr);
    startDeadline(id);
  }

  // Builds the served connection over `stream`. Null when the bootstrap factory or the RPC
  // set-up refuses it: logged, and the stream (so the socket) and the claim are released.
  kj::Own<Connection> open(const ConnectionInfo& info, PeerClaim claim,
                           kj::Own<kj::AsyncIoStream> stream, int fd) {
    uint64_t id = info.connectionId;
    try {
      capnp::Capability::Client bootstrap = listener.bootstrapFactory_(info);
      listener.connections_.fetch_add(1);
      // From here the Connection's Ending gives the count and the claim back. The handlers
      // capture no more than std::function holds without allocating (two words).
      return kj::heap<Connection>(
          listener, info, claim.handOver(), kj::mv(stream), fd, kj::mv(bootstrap),
          [this, id](const std::string& reason) {
            refusals.warn("disconnecting {}: {}", peerOf(id), reason);
            endLater(id);
          },
          [this, id] { endLater(id); });
    } catch (std::exception& exception) {
      spdlog::warn("refused connection from {}: {}", info.peer, exception.what());
    } catch (kj::Exception& exception) {
      spdlog::warn("refused connection from {}: {}", info.peer, exception.getDescription().cStr());
    }
    return {};
  }

  // The peer of a live connection (a violation is reported from inside it).
  std::string_view peerOf(uint64_t id) const {
    auto entry = live.find(id);
    if (entry == live.end()) return "a connection";
    return entry->second.connection->ending.info.peer;
  }

  // Closes the connection after the login deadline unless markLoggedIn() lifts that first.
  void startDeadline(uint64_t id) {
    std::chrono::milliseconds deadline = listener.limits_.loginDeadline;
    if (deadline.count() <= 0) return;
    deadlines.push_back({timer.now() + deadline.count() * kj::MILLISECONDS, id});
    if (deadlineTimerRunning) return;
    deadlineTimerRunning = true;
    tasks.add(expireDeadlines());
  }

  // Sleeps until the front of the queue is due, cuts what is due and not logged in, and goes
  // on while the queue is not empty.
  kj::Promise<void> expireDeadlines() {
    if (deadlines.empty()) {
      deadlineTimerRunning = false;
      return kj::READY_NOW;
    }
    return timer.atTime(deadlines.front().first).then([this] {
      kj::TimePoint now = timer.now();
      std::chrono::milliseconds deadline = listener.limits_.loginDeadline;
      while (!deadlines.empty() && deadlines.front().first <= now) {
        uint64_t id = deadlines.front().second;
        deadlines.pop_front();
        const std::string* peer = nullptr;
        if (auto entry = live.find(id); entry != live.end()) {
          if (!entry->second.loggedIn) peer = &entry->second.connection->ending.info.peer;
        } else if (auto shaking = handshakes.find(id); shaking != handshakes.end()) {
          peer = &shaking->second.peer;
        }
        if (peer == nullptr) continue;
        refusals.warn("disconnecting {}: not logged in within {} ms", *peer, deadline.count());
        endLater(id);
      }
      return expireDeadlines();
    });
  }

  // Drops the connection at the next turn (see the class comment). Unknown ids are ignored.
  void endLater(uint64_t connectionId) {
    if (!live.contains(connectionId) && !handshakes.contains(connectionId)) return;
    toDrop.push_back(connectionId);
    scheduleSweep();
  }

  void scheduleSweep() {
    if (sweepScheduled) return;
    sweepScheduled = true;
    tasks.add(kj::evalLater([this] { sweep(); }));
  }

  void sweep() {
    sweepScheduled = false;
    for (uint64_t id : std::exchange(handshakesDone, {})) handshakes.erase(id);
    for (uint64_t id : std::exchange(toDrop, {})) {
      if (auto shaking = handshakes.find(id); shaking != handshakes.end()) {
        Handshake doomed = std::move(shaking->second);
        handshakes.erase(shaking);
      }
      auto entry = live.find(id);
      if (entry == live.end()) continue;
      ServedConnection& served = entry->second.connection->served;
      if (served.heldByRpc()) {
        // The RPC system lets go of it once its read sees the cut (then this runs again).
        served.cut();
        continue;
      }
      network->forget(served);
      kj::Own<Connection> doomed = kj::mv(entry->second.connection);
      live.erase(entry);
      // `doomed` goes here: the socket closes, the hook runs.
    }
  }

  void disconnect(uint64_t connectionId) { endLater(connectionId); }

  void markLoggedIn(uint64_t connectionId) {
    auto it = live.find(connectionId);
    if (it != live.end()) it->second.loggedIn = true;
  }

  void taskFailed(kj::Exception&& exception) override {
    spdlog::error("listener task failed: {}", exception.getDescription().cStr());
  }

  RpcListener& listener;
  const size_t index;
  NetworkThread& thread;
  AsioTimer timer;  // the login deadlines and the network's flushes of held Finishes
  std::optional<asio::posix::stream_descriptor> acceptor;
  kj::Promise<void> acceptTask = nullptr;
  // Rate limit for the line about failing accepts (out of descriptors, say).
  std::chrono::steady_clock::time_point nextFailureWarning;
  uint64_t pausesSinceWarning = 0;
  ThrottledLog refusals;                 // lines about refused and disconnected peers
  std::optional<bool> optionsInherited;  // known from the first accepted TCP socket
  // What the thread holds per live connection.
  struct Live {
    kj::Own<Connection> connection;
    bool loggedIn = false;
  };
  std::unordered_map<uint64_t, Live> live;  // by connection id
  // TLS connections whose handshake runs (or just ended: released at the next sweep).
  struct Handshake {
    kj::Promise<void> done = nullptr;
    std::string peer;
  };
  std::unordered_map<uint64_t, Handshake> handshakes;  // by connection id
  // Login deadlines in accept order (so in deadline order): when, and whose.
  std::deque<std::pair<kj::TimePoint, uint64_t>> deadlines;
  bool deadlineTimerRunning = false;
  std::vector<uint64_t> toDrop;          // connections to drop at the next sweep
  std::vector<uint64_t> handshakesDone;  // TLS handshakes whose node to release
  bool sweepScheduled = false;
  // The deadline timer and the sweep.
  kj::TaskSet tasks{static_cast<kj::TaskSet::ErrorHandler&>(*this)};
  // The thread's RPC system over its network (closeRpc() destroys them before `live`).
  std::optional<ServerVatNetwork> network;
  std::optional<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
};

// ---------------------------------------------------------------------------- RpcListener

RpcListener::RpcListener(std::vector<NetworkThread*> threads, std::string_view endpoint,
                         BootstrapFactory bootstrapFactory, DisconnectHook onDisconnect,
                         ConnectionLimits limits, std::shared_ptr<kj::TlsContext> tls)
    : threads_(std::move(threads)),
      endpoint_(Endpoint::parse(endpoint)),
      bootstrapFactory_(std::move(bootstrapFactory)),
      onDisconnect_(std::move(onDisconnect)),
      limits_(limits),
      tls_(std::move(tls)) {
  if (threads_.empty()) throw std::invalid_argument("RpcListener needs at least one thread");

  // Bind everything first, here, so a failure is a plain exception to the caller.
  std::vector<int> fds;
  try {
    if (endpoint_.kind == Endpoint::Kind::kUnix) {
      fds.push_back(openListeningSocket(endpoint_, false));
    } else {
      // SO_REUSEPORT would also let us silently share a port with another process of the
      // same user, so first claim the port exclusively: this is where "Address already in
      // use" comes from, and where port 0 becomes a real port.
      int probe = openListeningSocket(endpoint_, false);
      port_ = localPort(probe);
      ::close(probe);
      Endpoint samePort = endpoint_;
      samePort.port = port_;
      for (size_t i = 0; i < threads_.size(); ++i) {
        fds.push_back(openListeningSocket(samePort, true));
        // Handed on to every accepted socket (ThreadState::inheritsOptions).
        int one = 1;
        ::setsockopt(fds.back(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(fds.back(), SOL_TCP, TCP_INQ, &one, sizeof(one));
      }
    }
  } catch (...) {
    for (int fd : fds) ::close(fd);
    throw;
  }

  states_.resize(threads_.size());
  for (size_t i = 0; i < threads_.size(); ++i) {
    int fd = i < fds.size() ? fds[i] : -1;
    try {
      threads_[i]->runSync([this, i, fd] {
        states_[i] = std::make_unique<ThreadState>(*this, i, *threads_[i]);
        if (fd >= 0) states_[i]->startAccepting(fd);
      });
    } catch (...) {
      for (size_t j = i + 1; j < fds.size(); ++j) ::close(fds[j]);
      stop();
      throw;
    }
  }
}

RpcListener::~RpcListener() {
  stop();
}

std::string RpcListener::boundEndpoint() const {
  Endpoint bound = endpoint_;
  bound.port = port_;
  return bound.text();
}

void RpcListener::onEachThread(const std::function<void(ThreadState&)>& fn) {
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (!states_[i]) continue;
    try {
      threads_[i]->runSync([&, i] { fn(*states_[i]); });
    } catch (std::exception& exception) {
      spdlog::error("listener {}: thread {} unavailable: {}", endpoint_.text(), i,
                    exception.what());
    }
  }
}

void RpcListener::stopAccepting() {
  onEachThread([](ThreadState& state) { state.stopAccepting(); });
}

void RpcListener::disconnectAll() {
  onEachThread([](ThreadState& state) { state.disconnectAll(); });
}

void RpcListener::onConnectionThread(size_t threadIndex, std::function<void(ThreadState&)> fn) {
  if (threadIndex >= threads_.size()) return;
  // states_[i] is only reset on its own thread (by stop()), so it is checked there; stop()
  // runs after anything posted before it, so `this` is still alive when this runs.
  auto run = [this, threadIndex, fn = std::move(fn)] {
    if (states_[threadIndex]) fn(*states_[threadIndex]);
  };
  if (threads_[threadIndex]->isCurrent()) {
    run();
  } else {
    threads_[threadIndex]->post(std::move(run));
  }
}

void RpcListener::disconnect(size_t threadIndex, uint64_t connectionId) {
  onConnectionThread(threadIndex,
                     [connectionId](ThreadState& state) { state.disconnect(connectionId); });
}

void RpcListener::markLoggedIn(size_t threadIndex, uint64_t connectionId) {
  onConnectionThread(threadIndex,
                     [connectionId](ThreadState& state) { state.markLoggedIn(connectionId); });
}

bool RpcListener::admitPeer(const std::string& address) {
  std::lock_guard lock(peersMutex_);
  size_t& count = connectionsByPeer_[address];
  if (count >= limits_.maxConnectionsPerPeer) return false;
  ++count;
  return true;
}

void RpcListener::releasePeer(const std::string& address) {
  std::lock_guard lock(peersMutex_);
  auto it = connectionsByPeer_.find(address);
  if (it == connectionsByPeer_.end()) return;
  if (--it->second == 0) connectionsByPeer_.erase(it);
}

void RpcListener::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (!states_[i]) continue;
    try {
      threads_[i]->runSync([this, i] {
        states_[i]->stopAccepting();
        states_[i]->disconnectAll();
        states_[i].reset();
      });
    } catch (std::exception& exception) {
      // Its loop is gone: the KJ objects cannot be destroyed anywhere safely, so leak them.
      spdlog::error("listener {}: thread {} stopped first; leaking its state: {}", endpoint_.text(),
                    i, exception.what());
      [[maybe_unused]] ThreadState* leaked = states_[i].release();
    }
  }
  if (endpoint_.kind == Endpoint::Kind::kUnix) ::unlink(endpoint_.path.c_str());
}

}  // namespace switchboard::net
