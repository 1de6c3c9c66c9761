#include "phone_load.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async.h>
#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "code_log.h"
#include "delivery_ledger.h"
#include "net/asio_stream.h"
#include "net/asio_timer.h"
#include "net/client_vat_network.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/tls_context.h"
#include "offer_schedule.h"
#include "report_fields.h"
#include "server_process.h"
#include "source_socket.h"
#include "stamped_stream.h"
#include "switchboard/proto/client.capnp.h"
#include "websocket_rpc.h"

namespace switchboard::bench {

namespace {

namespace proto = switchboard::proto;

constexpr std::int64_t kSecond = 1000000000;

// ---------------------------------------------------------------- timers

// A kj promise over an asio::steady_timer on the loop's io_context, due at an absolute
// CLOCK_MONOTONIC instant (std::chrono::steady_clock reads the same clock). Asio arms a
// timerfd for the earliest timer with microsecond resolution; the loop thread's timer slack
// is cut to 1 ns (runPhoneWorker), so the wake-up comes when asked. Dropping the promise
// cancels the timer; the handler then only touches its shared slot.
class TimerAdapter {
 public:
  TimerAdapter(kj::PromiseFulfiller<void>& fulfiller, asio::io_context& io, std::int64_t atNs)
      : timer_(std::make_shared<asio::steady_timer>(
            io, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(atNs)))),
        slot_(std::make_shared<kj::PromiseFulfiller<void>*>(&fulfiller)) {
    timer_->async_wait([slot = slot_, timer = timer_](const asio::error_code&) {
      if (*slot != nullptr) {
        auto* f = *slot;
        *slot = nullptr;
        f->fulfill();
      }
    });
  }
  ~TimerAdapter() {
    *slot_ = nullptr;
    timer_->cancel();
  }
  TimerAdapter(const TimerAdapter&) = delete;
  TimerAdapter& operator=(const TimerAdapter&) = delete;

 private:
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<kj::PromiseFulfiller<void>*> slot_;
};

kj::Promise<void> sleepUntilNs(asio::io_context& io, std::int64_t atNs) {
  return kj::newAdaptedPromise<void, TimerAdapter>(io, atNs);
}

kj::Promise<void> sleepNs(asio::io_context& io, std::int64_t ns) {
  return sleepUntilNs(io, monotonicNs() + ns);
}

template <class T>
kj::Promise<T> withTimeout(asio::io_context& io, kj::Promise<T> promise, std::int64_t ns,
                           const char* what) {
  return promise.exclusiveJoin(sleepNs(io, ns).then(
      [what]() -> kj::Promise<T> { return KJ_EXCEPTION(OVERLOADED, "timed out", what); }));
}

// ---------------------------------------------------------------- connections

// One TCP connection to the server and the RPC client over it, from a chosen source
// address in 127.0.0.0/8 (bound before connect, so the ephemeral ports of each source
// address are separate). Lives on the loop thread.
struct Connection {
  explicit Connection(kj::Own<StampedStream> s) : stream(kj::mv(s)) {}
  kj::Own<StampedStream> stream;   // before the RPC, which uses it until destroyed
  kj::Own<kj::AsyncIoStream> tls;  // --tls-ca: TLS over `stream` (not owning it)
  kj::Own<net::AsioTimer> timer;   // times tcp's held Finishes
  // --transport tcp: RPC on the stream's bytes, the client library's (its Finishes held).
  kj::Own<net::TwoPartyRpcClient> tcp;
  kj::Own<WebSocketRpc> ws;  // --transport ws: RPC over a WebSocket on the stream
  capnp::Capability::Client bootstrap() { return ws ? ws->bootstrap() : tcp->bootstrap(); }
};

kj::Promise<kj::Own<Connection>> connectFrom(asio::io_context& io, const sockaddr_in& server,
                                             std::uint32_t sourceHost, bool directWrites,
                                             bool webSocket, const net::ClientTls* tls) {
  std::string error;
  int fd = connectFromSource(server, sourceHost, error);
  if (fd < 0) return KJ_EXCEPTION(DISCONNECTED, "connection failed", error);
  // The stream is made at once, without waiting for the handshake first: its first
  // write finds the socket still connecting (EAGAIN) and waits for writability itself,
  // and a refused connect fails that write. So each phone's fd is registered with epoll
  // once, not twice (a separate descriptor for the wait cost an epoll_ctl ADD and DEL,
  // an FIONBIO ioctl and a getsockopt(SO_ERROR) per phone: 4 of the generator's ~22
  // syscalls per login).
  auto c = kj::heap<Connection>(
      kj::heap<StampedStream>(io, kj::heap<net::AsioStream>(io, fd), directWrites));
  if (tls != nullptr) {
    // The stamps stay at the socket: TLS sits between the RPC and the StampedStream.
    kj::Own<kj::AsyncIoStream> plain(c->stream.get(), kj::NullDisposer::instance);
    auto handshake = tls->context->wrapClient(kj::mv(plain), tls->serverName.c_str());
    return handshake.then([c = kj::mv(c), &io](kj::Own<kj::AsyncIoStream> secure) mutable {
      c->tls = kj::mv(secure);
      c->timer = kj::heap<net::AsioTimer>(io);
      c->tcp = kj::heap<net::TwoPartyRpcClient>(*c->tls, *c->timer);
      return kj::mv(c);
    });
  }
  if (!webSocket) {
    // The stream's bytes are the RPC's frames: each delivery gets its own message's stamp.
    c->stream->countCapnpMessages();
    c->timer = kj::heap<net::AsioTimer>(io);
    c->tcp = kj::heap<net::TwoPartyRpcClient>(*c->stream, *c->timer);
    return kj::mv(c);
  }
  auto& stream = *c->stream;
  return WebSocketRpc::open(stream, "127.0.0.1").then([c = kj::mv(c)](auto ws) mutable {
    c->ws = kj::mv(ws);
    return kj::mv(c);
  });
}

// ---------------------------------------------------------------- registration codes

// Registration codes from the host's log (CodeLog), waited for: polls the file while
// someone waits.
class CodeBook {
 public:
  CodeBook(asio::io_context& io, std::string path) : io_(io), log_(std::move(path)) {}

  kj::Promise<std::string> code(const std::string& phone, std::int64_t deadlineNs) {
    log_.scan();
    if (auto found = log_.take(phone)) return kj::mv(*found);
    if (monotonicNs() > deadlineNs) {
      return KJ_EXCEPTION(FAILED, "no registration code in the host log", phone);
    }
    return sleepNs(io_, 2000000).then([this, phone, deadlineNs]() {
      return code(phone, deadlineNs);
    });
  }

 private:
  asio::io_context& io_;
  CodeLog log_;
};

// ---------------------------------------------------------------- routes

// Who a flow's messages go from and to; the flow's books are in the DeliveryLedger under
// the same index.
struct Route {
  std::uint32_t sender = 0;
  std::uint32_t firstReceiver = 0;  // phone index of the (first) receiver
  std::uint32_t receivers = 1;      // members that must get each message
  std::uint64_t group = 0;          // 0 for 1:1
  std::uint64_t quota = 0;          // messages the flow sends in all (0: until stopped)
};

struct Phone {
  std::string number;
  std::string key;
  kj::Maybe<kj::Own<Connection>> connection;
  kj::Maybe<proto::Session::Client> session;
  bool receiver = false;   // receives a flow (offline: waits offline until the drain)
  std::uint32_t node = 0;  // which server (a cluster's node) it registers and logs in on
  bool loggedIn = false;
  // (flow, seq) of sends handed to the RPC layer whose bytes have not been written yet: the
  // next write on the connection stamps them (StampedStream::beforeWrite).
  std::vector<std::pair<std::uint32_t, std::uint32_t>> unwritten;
};

class PhoneFleet;

// The Inbox each phone hands the server at login: deliveries go to the fleet's checks.
class BenchInbox final : public proto::Inbox::Server {
 public:
  BenchInbox(PhoneFleet& fleet, std::uint32_t phone) : fleet_(fleet), phone_(phone) {}

 protected:
  kj::Promise<void> deliver(DeliverContext context) override;
  kj::Promise<void> receipt(ReceiptContext) override { return kj::READY_NOW; }
  kj::Promise<void> presence(PresenceContext) override { return kj::READY_NOW; }
  kj::Promise<void> kicked(KickedContext context) override;

 private:
  PhoneFleet& fleet_;
  std::uint32_t phone_;
};

// ---------------------------------------------------------------- the fleet

// All phones of one worker and the load they carry. Created, driven and destroyed on the
// worker's network thread; the worker's main thread only calls it through runSync().
class PhoneFleet final : private kj::TaskSet::ErrorHandler {
 public:
  PhoneFleet(const BenchOptions& options, net::NetworkThread& thread)
      : options_(options),
        io_(thread.ioContext()),
        ledger_(options.bodyBytes, options.scenario == "offline"
                                       ? DeliveryLedger::InFlightUntil::acked
                                       : DeliveryLedger::InFlightUntil::received),
        tasks_(*this) {
    // One server, or a cluster's nodes: each with its address and the log its codes go to.
    std::vector<int> ports = options.nodePorts;
    std::vector<std::filesystem::path> logs = options.nodeLogs;
    if (ports.empty()) {
      ports = {options.serverPort};
      logs = {options.codeLog};
    }
    for (size_t i = 0; i < ports.size(); ++i) {
      sockaddr_in server{};
      server.sin_family = AF_INET;
      server.sin_port = htons(static_cast<uint16_t>(ports[i]));
      ::inet_pton(AF_INET, options.serverHost.c_str(), &server.sin_addr);
      servers_.push_back(server);
      codes_.push_back(std::make_unique<CodeBook>(io_, logs[i].string()));
    }
    if (!options.tlsCa.empty()) {
      tls_ = net::ClientTls{net::makeClientTlsContext(options.tlsCa), options.serverHost};
    }
    buildRoles();
  }

  // Registers every phone, then logs in those that are online from the start.
  kj::Promise<void> setup() {
    std::int64_t t0 = monotonicNs();
    std::vector<std::uint32_t> all(phones_.size());
    for (std::uint32_t i = 0; i < all.size(); ++i) all[i] = i;
    return forEach(
               all, [this](std::uint32_t i) { return registerOrRetry(i); }, registered_,
               registerFailures_)
        .then([this, t0]() {
          setupFields_.set("registered", registered_);
          setupFields_.set("register_failures", registerFailures_);
          setupFields_.set("register_retries", registerRetries_);
          setupFields_.set("first_retry", firstRetry_.empty() ? "none" : firstRetry_);
          setupFields_.set("register_start_ns", t0);
          setupFields_.set("register_end_ns", monotonicNs());
          std::vector<std::uint32_t> online;
          for (std::uint32_t i = 0; i < phones_.size(); ++i) {
            if (!phones_[i].key.empty() && !offlineAtStart(i)) online.push_back(i);
          }
          logins_.restart();
          return forEach(
              online, [this](std::uint32_t i) { return loginPhone(i); }, loggedIn_, loginFailures_);
        })
        .then([this]() {
          setupFields_.set("logged_in", loggedIn_);
          setupFields_.set("login_failures", loginFailures_);
          logins_.report(setupFields_);
          setupFields_.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
          if (servers_.size() > 1) {
            std::vector<std::uint64_t> perNode(servers_.size(), 0);
            for (const Phone& phone : phones_) perNode[phone.node] += phone.loggedIn ? 1 : 0;
            for (size_t n = 0; n < perNode.size(); ++n) {
              setupFields_.set("logged_in_node" + std::to_string(n), perNode[n]);
            }
          }
          return createGroups();
        })
        .then([this]() { return firstContact(); })
        .then([this]() {
          setupFields_.set("hello_failures", helloFailures_);
          setupFields_.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
        });
  }
  ReportFields setupFields() const { return setupFields_; }

  // Starts the load at t0 (the coordinator's clock is this machine's CLOCK_MONOTONIC).
  // Resolves at once for timed scenarios (they run until stop()); for `offline` and
  // `dbsize` it resolves when their messages are through.
  kj::Promise<void> start(std::int64_t t0) {
    t0_ = t0;
    const std::string& s = options_.scenario;
    ledger_.openWindow(
        s == "dbsize" ? t0 : t0 + static_cast<std::int64_t>(options_.warmupSeconds * kSecond));
    return sleepUntilNs(io_, t0).then([this]() -> kj::Promise<void> {
      running_ = true;
      loadCpuStartNs_ = processCpuNs();
      const std::string& s = options_.scenario;
      if (s == "throughput" || s == "groups") {
        for (std::uint32_t f = 0; f < routes_.size(); ++f) pump(f);
      } else if (s == "latency" || s == "swap") {
        schedule_ = OfferSchedule(t0_, static_cast<double>(shareOf(options_.count, options_.procs,
                                                                   options_.workerIndex)));
        tasks_.add(offer(0));
      } else if (s == "offline") {
        return runOffline();
      } else if (s == "dbsize") {
        return runQuota();
      }
      return kj::READY_NOW;
    });
  }

  void mark(std::int64_t atNs) { ledger_.mark(atNs); }

  // Stops offering load and waits (bounded) until every message in flight has arrived.
  kj::Promise<void> stop() {
    ledger_.closeWindow(monotonicNs());
    running_ = false;
    return drain(monotonicNs() + 10 * kSecond);
  }

  ReportFields result() {
    ReportFields r = ledger_.result();
    r.set("load_cpu_us", static_cast<double>(processCpuNs() - loadCpuStartNs_) / 1000.0);
    r.set("disconnects", disconnects_);
    r.set("store_msgs", storeMsgs_);
    r.set("store_ns", storeNs_);
    r.set("drain_msgs", drainMsgs_);
    r.set("drain_ns", drainNs_);
    r.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
    return r;
  }

  void onDeliver(std::uint32_t phone, capnp::List<proto::Message>::Reader messages) {
    // When the bytes of this delivery arrived and were read, not now: decoding and dispatch
    // are ours.
    ArrivalStamp at{0, monotonicNs()};
    KJ_IF_MAYBE (connection, phones_[phone].connection) {
      if ((*connection)->stream->messageArrival().readNs != 0) {
        at = (*connection)->stream->messageArrival();
      }
    }
    for (auto message : messages) {
      auto body = message.getBody();
      auto completed = ledger_.received(body.begin(), body.size(), at, phone);
      if (completed && running_ && closedLoop()) pump(*completed);
    }
  }

  void onKicked(const std::string& reason) {
    ++disconnects_;
    fail("kicked: " + reason);
  }

 private:
  bool offlineScenario() const { return options_.scenario == "offline"; }
  bool closedLoop() const {
    return options_.scenario == "throughput" || options_.scenario == "groups" ||
           options_.scenario == "dbsize";
  }
  bool openLoop() const { return options_.scenario == "latency" || options_.scenario == "swap"; }
  bool offlineAtStart(std::uint32_t phone) const {
    if (!offlineScenario()) return false;
    return phones_[phone].receiver;  // receivers wait offline
  }

  void buildRoles() {
    const std::string& s = options_.scenario;
    std::uint32_t firstGlobal = static_cast<std::uint32_t>(options_.workerIndex) * 200000;
    auto addPhones = [&](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i) {
        Phone phone;
        char number[32];
        std::snprintf(number, sizeof(number), "+1555%07u",
                      firstGlobal + static_cast<std::uint32_t>(phones_.size()));
        phone.number = number;
        phones_.push_back(std::move(phone));
      }
    };
    auto nodes = static_cast<std::uint32_t>(servers_.size());
    if (s == "connect") {
      addPhones(shareOf(options_.count, options_.procs, options_.workerIndex));
      for (std::uint32_t i = 0; i < phones_.size(); ++i) phones_[i].node = i % nodes;
    } else if (s == "groups") {
      std::uint32_t size = std::max<std::uint32_t>(options_.groupSize, 2);
      std::uint64_t groups = std::max<std::uint64_t>(
          1, shareOf(options_.count, options_.procs, options_.workerIndex) / size);
      for (std::uint64_t g = 0; g < groups; ++g) {
        auto base = static_cast<std::uint32_t>(phones_.size());
        addPhones(size);
        addFlow(base, base + 1, size - 1);
      }
    } else {
      std::uint64_t pairs = s == "throughput" || s == "offline" ? options_.count : options_.pairs;
      pairs = std::max<std::uint64_t>(1, shareOf(pairs, options_.procs, options_.workerIndex));
      // dbsize: `count` messages in all, shared over the workers and then over their pairs.
      std::uint64_t messages = shareOf(options_.count, options_.procs, options_.workerIndex);
      for (std::uint64_t p = 0; p < pairs; ++p) {
        auto base = static_cast<std::uint32_t>(phones_.size());
        addPhones(2);
        addFlow(base, base + 1, 1);
        // A cluster: the sender on node p, the receiver on the next node (or the same).
        auto node = static_cast<std::uint32_t>(p % nodes);
        phones_[base].node = node;
        phones_[base + 1].node = options_.pairNodes == "same" ? node : (node + 1) % nodes;
        if (s == "offline") routes_.back().quota = options_.offlineMessages;
        if (s == "dbsize") {
          routes_.back().quota = shareOf(messages, static_cast<int>(pairs), static_cast<int>(p));
        }
      }
    }
  }

  void addFlow(std::uint32_t sender, std::uint32_t firstReceiver, std::uint32_t receivers) {
    routes_.push_back(Route{sender, firstReceiver, receivers, 0, 0});
    ledger_.addFlow(receivers, firstReceiver);
    for (std::uint32_t r = 0; r < receivers; ++r) phones_[firstReceiver + r].receiver = true;
  }

  std::uint32_t sourceHost() { return sourceHostOf(options_.workerIndex, connectionCounter_++); }

  void fail(const std::string& why) {
    if (firstFailure_.empty()) {
      firstFailure_ = why;
      for (char& c : firstFailure_)
        if (c == ' ' || c == '=' || c == '\n') c = '_';
      if (firstFailure_.size() > 120) firstFailure_.resize(120);
    }
  }

  // Runs `step` over `items` with at most options_.concurrency in flight.
  template <class Step>
  kj::Promise<void> forEach(std::vector<std::uint32_t> items, Step step, std::uint64_t& ok,
                            std::uint64_t& failed) {
    auto queue = std::make_shared<std::vector<std::uint32_t>>(std::move(items));
    auto next = std::make_shared<size_t>(0);
    kj::Vector<kj::Promise<void>> lanes;
    for (std::uint32_t lane = 0; lane < std::max<std::uint32_t>(1, options_.concurrency); ++lane) {
      lanes.add(runLane(queue, next, step, ok, failed));
    }
    return kj::joinPromises(lanes.releaseAsArray());
  }

  template <class Step>
  kj::Promise<void> runLane(std::shared_ptr<std::vector<std::uint32_t>> queue,
                            std::shared_ptr<size_t> next, Step step, std::uint64_t& ok,
                            std::uint64_t& failed) {
    if (*next >= queue->size()) return kj::READY_NOW;
    std::uint32_t item = (*queue)[(*next)++];
    return withTimeout(io_, step(item), 30 * kSecond, "phone setup")
        .then([&ok]() { ++ok; },
              [this, &failed](kj::Exception&& e) {
                ++failed;
                fail(e.getDescription().cStr());
              })
        .then([this, queue, next, step, &ok, &failed]() mutable {
          return runLane(queue, next, step, ok, failed);
        });
  }

  // A cluster: a registration refused because JetStream did not answer a directory write
  // ("No responders available for request", seen while the nodes' first registrations race
  // to open their buckets: docs/cluster.md, "What remains") is made once more, and counted
  // in register_retries (first_retry says why); any other failure, or a second one, counts.
  kj::Promise<void> registerOrRetry(std::uint32_t index) {
    return registerPhone(index).catch_([this, index](kj::Exception&& e) -> kj::Promise<void> {
      std::string why = e.getDescription().cStr();
      if (servers_.size() < 2 || why.find("No responders") == std::string::npos) {
        return kj::mv(e);
      }
      ++registerRetries_;
      if (firstRetry_.empty()) {
        firstRetry_ = why.substr(0, 120);
        for (char& c : firstRetry_)
          if (c == ' ' || c == '=' || c == '\n') c = '_';
      }
      return registerPhone(index);
    });
  }

  kj::Promise<void> registerPhone(std::uint32_t index) {
    return connectFrom(io_, servers_[phones_[index].node], sourceHost(), false,
                       options_.transport == "ws", tlsOrNull())
        .then([this, index](kj::Own<Connection> c) {
          auto gateway = c->bootstrap().castAs<proto::Gateway>();
          auto request = gateway.requestCodeRequest();
          request.setPhone(phones_[index].number);
          return request.send()
              .then([this, index](auto&&) {
                return codes_[phones_[index].node]->code(phones_[index].number,
                                                         monotonicNs() + 20 * kSecond);
              })
              .then([this, index, gateway](std::string code) mutable {
                auto verify = gateway.verifyRequest();
                verify.setPhone(phones_[index].number);
                verify.setCode(code);
                verify.setDeviceName("sbbench");
                return verify.send();
              })
              .then([this, index](capnp::Response<proto::Gateway::VerifyResults>&& response) {
                auto key = response.getKey();
                phones_[index].key.assign(reinterpret_cast<const char*>(key.begin()), key.size());
              })
              .attach(kj::mv(c));
        });
  }

  kj::Promise<void> loginPhone(std::uint32_t index) {
    // An open loop writes each send at once, so its send stamp is the send; a closed loop
    // keeps AsioStream's batching (a syscall per message would bound the generator).
    return connectFrom(io_, servers_[phones_[index].node], sourceHost(), openLoop(),
                       options_.transport == "ws", tlsOrNull())
        .then([this, index](kj::Own<Connection> c) {
          c->stream->beforeWrite = [this, index](std::int64_t ns) {
            auto& unwritten = phones_[index].unwritten;
            for (auto [flow, seq] : unwritten) ledger_.sentAt(flow, seq, ns);
            unwritten.clear();
          };
          auto gateway = c->bootstrap().castAs<proto::Gateway>();
          auto request = gateway.loginRequest();
          Phone& phone = phones_[index];
          request.setPhone(phone.number);
          request.setKey(
              kj::arrayPtr(reinterpret_cast<const kj::byte*>(phone.key.data()), phone.key.size()));
          request.setInbox(kj::heap<BenchInbox>(*this, index));
          auto promise = request.send();
          phones_[index].connection = kj::mv(c);
          return promise.then(
              [this, index](capnp::Response<proto::Gateway::LoginResults>&& response) {
                phones_[index].session = response.getSession();
                phones_[index].loggedIn = true;
              });
        });
  }

  kj::Promise<void> createGroups() {
    kj::Vector<kj::Promise<void>> made;
    if (options_.scenario != "groups") return kj::READY_NOW;
    for (std::uint32_t index = 0; index < routes_.size(); ++index) {
      Route& route = routes_[index];
      KJ_IF_MAYBE (session, phones_[route.sender].session) {
        auto request = session->createGroupRequest();
        request.setName("bench");
        auto members = request.initMembers(route.receivers);
        for (std::uint32_t r = 0; r < route.receivers; ++r) {
          members.set(r, phones_[route.firstReceiver + r].number);
        }
        made.add(request.send().then(
            [this, index](auto&& response) { routes_[index].group = response.getGroup(); }));
      }
    }
    return kj::joinPromises(made.releaseAsArray());
  }

  // A cluster: each sender's first message to its partner goes alone (a body too short for
  // the ledger, which ignores it) and is acknowledged before the load starts, so the sender's
  // node has learnt the partner. Concurrent first sends to a phone a node has not learnt yet
  // are not ordered (docs/cluster.md); the figures are of the steady state after that.
  kj::Promise<void> firstContact() {
    const std::string& s = options_.scenario;
    if (servers_.size() < 2 || s == "groups" || s == "offline") return kj::READY_NOW;
    std::vector<std::uint32_t> flows(routes_.size());
    for (std::uint32_t f = 0; f < flows.size(); ++f) flows[f] = f;
    return forEach(
        flows, [this](std::uint32_t f) { return sayHello(f); }, hellos_, helloFailures_);
  }

  kj::Promise<void> sayHello(std::uint32_t flow) {
    Route& route = routes_[flow];
    KJ_IF_MAYBE (session, phones_[route.sender].session) {
      auto request = session->sendRequest();
      request.setTo(phones_[route.firstReceiver].number);
      request.setClientMsgId("hello");
      static constexpr char kHello[] = "hello";
      auto body = request.initBody(sizeof(kHello) - 1);
      std::memcpy(body.begin(), kHello, sizeof(kHello) - 1);
      return request.send().ignoreResult();
    }
    return kj::READY_NOW;
  }

  void pump(std::uint32_t flow) {
    // A sender whose setup failed (counted there) has no session: nothing to send, and the
    // loop below would spin, since a failed send frees its window slot at once.
    if (phones_[routes_[flow].sender].session == nullptr) return;
    std::uint64_t quota = routes_[flow].quota;
    while (running_ && ledger_.inflight(flow) < options_.window &&
           (quota == 0 || ledger_.sent(flow) < quota)) {
      sendOne(flow, monotonicNs());
    }
  }

  void sendOne(std::uint32_t flow, std::int64_t stampNs) {
    Route& route = routes_[flow];
    KJ_IF_MAYBE (session, phones_[route.sender].session) {
      auto fill = [&](auto& request) {
        auto body = request.initBody(static_cast<unsigned>(ledger_.bodyBytes()));
        std::uint32_t seq = ledger_.stamp(flow, stampNs, body.begin());
        char id[32];
        std::snprintf(id, sizeof(id), "%u-%u", flow, seq);
        request.setClientMsgId(id);
        phones_[route.sender].unwritten.emplace_back(flow, seq);
        return seq;
      };
      auto onAck = [this, flow](std::uint32_t seq) {
        return [this, flow, seq](auto&&) {
          if (ledger_.acked(flow, seq, true) && running_) pump(flow);
        };
      };
      auto onError = [this, flow](std::uint32_t seq) {
        return [this, flow, seq](kj::Exception&& e) {
          ledger_.acked(flow, seq, false);
          fail(e.getDescription().cStr());
        };
      };
      if (route.group != 0) {
        auto request = session->sendGroupRequest();
        request.setGroup(route.group);
        std::uint32_t seq = fill(request);
        tasks_.add(request.send().then(onAck(seq), onError(seq)));
      } else {
        auto request = session->sendRequest();
        request.setTo(phones_[route.firstReceiver].number);
        std::uint32_t seq = fill(request);
        tasks_.add(request.send().then(onAck(seq), onError(seq)));
      }
    } else {
      ledger_.sendFailed(flow);
    }
  }

  // Open loop: offers options_.count msgs/s (this worker's share) on schedule_. Sends every
  // offer that is due (normally the one the timer was armed for), then sleeps until exactly
  // the next one is due. The body carries the scheduled time, so a stalled server (or a late
  // generator) still shows as latency from the intended send, not as a lower rate.
  kj::Promise<void> offer(std::uint64_t next) {
    if (!running_) return kj::READY_NOW;
    std::int64_t now = monotonicNs();
    for (std::int64_t due = schedule_.dueNs(next); due <= now; due = schedule_.dueNs(++next)) {
      std::uint32_t flow = OfferSchedule::flowOf(next, routes_.size());
      if (ledger_.inflight(flow) < kOpenLoopInFlightLimit) {
        sendOne(flow, due);
      } else {
        ledger_.skipped();
      }
    }
    return sleepUntilNs(io_, schedule_.dueNs(next)).then([this, next]() { return offer(next); });
  }

  kj::Promise<void> drain(std::int64_t deadlineNs) {
    if (ledger_.idle() || monotonicNs() > deadlineNs) return kj::READY_NOW;
    return sleepNs(io_, 5000000).then([this, deadlineNs]() { return drain(deadlineNs); });
  }

  // Store phase: senders send to receivers that are offline, counted on the sent tick.
  // Drain phase: the receivers log in and everything queued is delivered.
  kj::Promise<void> runOffline() {
    for (std::uint32_t f = 0; f < routes_.size(); ++f) pump(f);
    std::int64_t storeStart = monotonicNs();
    return waitUntil(
               [this]() {
                 return ledger_.ackedTotal() + ledger_.sendErrors() >= expectedOffline();
               },
               monotonicNs() + patienceNs(expectedOffline()))
        .then([this, storeStart]() {
          storeNs_ = monotonicNs() - storeStart;
          storeMsgs_ = ledger_.ackedTotal();
          running_ = false;
          std::vector<std::uint32_t> receivers;
          for (auto& route : routes_) receivers.push_back(route.firstReceiver);
          drainStart_ = monotonicNs();
          return forEach(
              receivers, [this](std::uint32_t i) { return loginPhone(i); }, loggedIn_,
              loginFailures_);
        })
        .then([this]() {
          return waitUntil([this]() { return ledger_.deliveredTotal() >= storeMsgs_; },
                           monotonicNs() + patienceNs(storeMsgs_));
        })
        .then([this]() {
          drainNs_ = monotonicNs() - drainStart_;
          drainMsgs_ = ledger_.deliveredTotal();
        });
  }

  std::uint64_t expectedOffline() const {
    return static_cast<std::uint64_t>(routes_.size()) * options_.offlineMessages;
  }

  // How long a self-timed phase may take for `messages`: a minute, plus a millisecond per
  // message (a phase slower than 1,000 msgs/s is broken, not slow).
  static std::int64_t patienceNs(std::uint64_t messages) {
    return 60 * kSecond + static_cast<std::int64_t>(messages) * 1000000;
  }

  // dbsize: every pair sends its quota closed-loop (window in flight until received); done
  // when all of it arrived and was acknowledged. The window closes then, so delivered_window
  // and window_ns describe the whole run.
  kj::Promise<void> runQuota() {
    std::uint64_t total = 0;
    for (const Route& route : routes_) total += route.quota;
    for (std::uint32_t f = 0; f < routes_.size(); ++f) pump(f);
    return waitUntil(
               [this, total]() {
                 return ledger_.deliveredTotal() >= total &&
                        ledger_.ackedTotal() + ledger_.sendErrors() >= total;
               },
               monotonicNs() + patienceNs(total))
        .then([this]() {
          running_ = false;
          ledger_.closeWindow(monotonicNs());
        });
  }

  template <class Done>
  kj::Promise<void> waitUntil(Done done, std::int64_t deadlineNs) {
    // Offline senders keep their window full as acks come back (pump stops at the count).
    if (done() || monotonicNs() > deadlineNs) return kj::READY_NOW;
    return sleepNs(io_, 2000000).then([this, done, deadlineNs]() {
      return waitUntil(done, deadlineNs);
    });
  }

  void taskFailed(kj::Exception&& exception) override { fail(exception.getDescription().cStr()); }

  const net::ClientTls* tlsOrNull() const { return tls_ ? &*tls_ : nullptr; }

  const BenchOptions& options_;
  asio::io_context& io_;
  std::vector<sockaddr_in> servers_;              // one, or a cluster's nodes
  std::vector<std::unique_ptr<CodeBook>> codes_;  // the same order
  std::optional<net::ClientTls> tls_;             // --tls-ca: every phone connection is TLS
  std::vector<Phone> phones_;
  std::vector<Route> routes_;
  std::uint32_t connectionCounter_ = 0;
  OfferSchedule schedule_;

  std::uint64_t registered_ = 0, registerFailures_ = 0, loggedIn_ = 0, loginFailures_ = 0;
  std::uint64_t hellos_ = 0, helloFailures_ = 0, registerRetries_ = 0;
  std::string firstRetry_;
  LoginClock logins_;
  std::int64_t loadCpuStartNs_ = 0;  // the process's CPU when the load started
  ReportFields setupFields_;
  std::string firstFailure_;

  DeliveryLedger ledger_;
  bool running_ = false;
  std::int64_t t0_ = 0;
  std::uint64_t disconnects_ = 0;
  std::uint64_t storeMsgs_ = 0, drainMsgs_ = 0;
  std::int64_t storeNs_ = 0, drainNs_ = 0, drainStart_ = 0;
  kj::TaskSet tasks_;  // last: in-flight sends reference the members above
};

kj::Promise<void> BenchInbox::deliver(DeliverContext context) {
  fleet_.onDeliver(phone_, context.getParams().getMessages());
  return kj::READY_NOW;
}

kj::Promise<void> BenchInbox::kicked(KickedContext context) {
  fleet_.onKicked(context.getParams().getReason().cStr());
  return kj::READY_NOW;
}

}  // namespace

int runPhoneWorker(const BenchOptions& options, WorkerLink& link) {
  raiseFileLimit();
  net::NetworkThread thread("sbbench");
  thread.start();
  // Timers wake the loop thread when asked, not up to 50 µs later (the default slack).
  thread.runSync([]() { ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); });
  std::unique_ptr<PhoneFleet> fleet;
  thread.runSync([&]() {
    fleet = std::make_unique<PhoneFleet>(options, thread);
    return fleet->setup();
  });
  link.send("ready", thread.runSync([&]() { return fleet->setupFields(); }));
  bool selfTimed = options.scenario == "offline" || options.scenario == "dbsize";
  while (true) {
    WorkerLink::Command command = link.next();
    if (command.verb == "go") {
      thread.runSync([&]() { return fleet->start(command.atNs); });
      if (selfTimed) break;
    } else if (command.verb == "mark") {
      thread.runSync([&]() { fleet->mark(command.atNs); });
    } else if (command.verb == "stop") {
      thread.runSync([&]() { return fleet->stop(); });
      break;
    } else if (command.verb == "eof") {
      break;
    }
  }
  link.send("result", thread.runSync([&]() { return fleet->result(); }));
  thread.runSync([&]() { fleet.reset(); });
  thread.stop();
  return 0;
}

}  // namespace switchboard::bench
