#include "mqtt_load.h"

#include <mosquitto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "deadline_epoll.h"
#include "peer_load.h"
#include "server_process.h"
#include "source_socket.h"

namespace switchboard::bench {

namespace {

constexpr std::int64_t kSecond = 1000000000;

// The bytes of one MQTT 3.1.1 PUBLISH (libmosquitto's default protocol): fixed header byte,
// the remaining length (a varint), topic length and topic, packet id (QoS > 0), payload.
std::size_t publishBytes(const mosquitto_message& message) {
  std::size_t remaining = 2 + std::strlen(message.topic) + (message.qos > 0 ? 2 : 0) +
                          static_cast<std::size_t>(message.payloadlen);
  std::size_t header = 2;
  for (std::size_t left = remaining >> 7; left > 0; left >>= 7) ++header;
  return header + remaining;
}

// libmosquitto clients without its threads: one epoll over all their sockets, and
// mosquitto_loop_read/write/misc called as the sockets become ready. A publish made outside
// a callback is written by mosquitto_publish itself (libmosquitto writes at once when no
// loop thread runs), so the clock read before it is the send time.
//
// Arrivals: libmosquitto reads the socket itself with read(), which brings no kernel
// timestamp, and it cannot be given one without patching it. So just before
// mosquitto_loop_read() the socket epoll found readable is peeked (recvmsg MSG_PEEK |
// MSG_DONTWAIT with SO_TIMESTAMPNS): that stamp covers the bytes the peek saw, every one of
// which arrived no later. The message callback counts the PUBLISH bytes libmosquitto has
// handed out since the peek (publishBytes); a message that ends within the peeked bytes
// gets the peek's stamps, one beyond them (it arrived while libmosquitto was reading) gets
// no kernel stamp and the clock read in the callback (counted in
// arrivals_without_kernel_stamp). A PUBLISH whose first bytes an earlier read already took
// is counted whole, which can only push a message out of the peek, never a later one in.
class MqttClients final : public PeerClients {
 public:
  MqttClients(const BenchOptions& options, std::size_t flows) : options_(options), flows_(flows) {
    mosquitto_lib_init();
  }
  ~MqttClients() override {
    for (auto& c : clients_) {
      if (c->handle != nullptr) {
        mosquitto_disconnect(c->handle);
        mosquitto_destroy(c->handle);
      }
    }
    mosquitto_lib_cleanup();
  }

  void setup(ReportFields& ready) override {
    std::size_t count = options_.scenario == "connect"
                            ? shareOf(options_.count, options_.procs, options_.workerIndex)
                            : flows_ * 2;
    // mosquitto listens with a backlog of 100: keep handshakes well below it across workers.
    std::size_t handshakeLimit =
        std::max<std::size_t>(1, 40 / static_cast<std::size_t>(options_.procs));
    LoginClock logins;
    for (std::size_t i = 0; i < count; ++i) {
      while (pending_ >= handshakeLimit) poll(monotonicNs() + 5000000);
      auto client = std::make_unique<Client>();
      client->owner = this;
      client->index = i;
      client->receiver = options_.scenario != "connect" && i % 2 == 1;
      char id[48];
      std::snprintf(id, sizeof(id), "sbbench-%d-%zu", options_.workerIndex, i);
      client->handle = mosquitto_new(id, true, client.get());
      // As a latency-minded client would: no Nagle delay on small publishes.
      mosquitto_int_option(client->handle, MOSQ_OPT_TCP_NODELAY, 1);
      mosquitto_connect_callback_set(client->handle, &MqttClients::onConnect);
      mosquitto_subscribe_callback_set(client->handle, &MqttClients::onSubscribe);
      mosquitto_message_callback_set(client->handle, &MqttClients::onMessage);
      std::uint32_t host = sourceHostOf(options_.workerIndex, static_cast<std::uint32_t>(i));
      char source[32];
      std::snprintf(source, sizeof(source), "127.%u.%u.%u", (host >> 16) & 255, (host >> 8) & 255,
                    host & 255);
      int rc = mosquitto_connect_bind(client->handle, options_.serverHost.c_str(),
                                      options_.serverPort, 60, source);
      if (rc == MOSQ_ERR_SUCCESS) enableReceiveStamps(mosquitto_socket(client->handle));
      if (rc != MOSQ_ERR_SUCCESS) {
        fail(std::string("connect: ") + mosquitto_strerror(rc));
        mosquitto_destroy(client->handle);
        client->handle = nullptr;
        clients_.push_back(std::move(client));
        continue;
      }
      ++pending_;
      epoll_.add(mosquitto_socket(client->handle), EPOLLIN, client.get());
      touched_.push_back(client.get());
      clients_.push_back(std::move(client));
    }
    std::int64_t deadline = monotonicNs() + 60 * kSecond;
    while ((pending_ > 0 || subscribing_ > 0) && monotonicNs() < deadline) {
      poll(monotonicNs() + 5000000);
    }
    ready.set("registered", connected_);
    ready.set("logged_in", connected_);
    ready.set("login_failures", static_cast<std::uint64_t>(count) - connected_);
    ready.set("register_failures", 0);
    logins.report(ready);
    ready.set("first_failure", firstFailure_.empty() ? "none" : firstFailure_);
  }

  void poll(std::int64_t deadlineNs) override {
    epoll_event events[256];
    int n = epoll_.wait(events, 256, deadlineNs);
    for (int i = 0; i < n; ++i) {
      auto* client = static_cast<Client*>(events[i].data.ptr);
      if (client->handle == nullptr) continue;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        // The bytes are in the socket now; libmosquitto reads them next, and writes the
        // PUBACK before it calls the message callback, which is not the broker's time.
        peek(*client);
        int rc = mosquitto_loop_read(client->handle, 64);
        if (rc != MOSQ_ERR_SUCCESS) lost(*client, rc);
      }
      touched_.push_back(client);
    }
    std::vector<Client*> still;
    for (Client* client : touched_) {
      if (client->handle == nullptr) continue;
      if (mosquitto_want_write(client->handle)) {
        mosquitto_loop_write(client->handle, 64);
        if (mosquitto_want_write(client->handle)) still.push_back(client);
      }
    }
    touched_.swap(still);
    std::int64_t now = monotonicNs();
    if (now - lastMisc_ > kSecond) {
      lastMisc_ = now;
      for (auto& c : clients_)
        if (c->handle != nullptr) mosquitto_loop_misc(c->handle);
    }
  }

  bool send(std::uint32_t flow, std::uint32_t, const std::string& body,
            std::int64_t& sentNs) override {
    Client& sender = *clients_[flow * 2];
    if (sender.handle == nullptr) return false;
    char topic[48];
    std::snprintf(topic, sizeof(topic), "bench/%d/%u", options_.workerIndex, flow);
    sentNs = monotonicNs();
    int rc = mosquitto_publish(sender.handle, nullptr, topic, static_cast<int>(body.size()),
                               body.data(), 1, false);
    touched_.push_back(&sender);
    return rc == MOSQ_ERR_SUCCESS;
  }

 private:
  struct Client {
    MqttClients* owner = nullptr;
    mosquitto* handle = nullptr;
    std::size_t index = 0;
    bool receiver = false;
    bool connected = false;
  };

  // The kernel's stamp of what `client`'s socket holds now, for the messages
  // mosquitto_loop_read() hands out next.
  void peek(Client& client) {
    ssize_t n = receiveStamped(mosquitto_socket(client.handle), peekBuffer_.data(),
                               peekBuffer_.size(), MSG_PEEK | MSG_DONTWAIT, peeked_);
    peekedBytes_ = n > 0 ? static_cast<std::size_t>(n) : 0;
    if (n <= 0) peeked_ = ArrivalStamp{0, monotonicNs()};
    handedOut_ = 0;
  }

  void fail(const std::string& why) {
    if (!firstFailure_.empty()) return;
    firstFailure_ = why;
    for (char& c : firstFailure_)
      if (c == ' ' || c == '=') c = '_';
  }

  void lost(Client& client, int rc) {
    fail(std::string("connection lost: ") + mosquitto_strerror(rc));
    if (!client.connected && pending_ > 0) --pending_;
    epoll_.remove(mosquitto_socket(client.handle));
    mosquitto_destroy(client.handle);
    client.handle = nullptr;
  }

  static void onConnect(mosquitto* handle, void* obj, int rc) {
    auto* client = static_cast<Client*>(obj);
    MqttClients& self = *client->owner;
    if (self.pending_ > 0) --self.pending_;
    if (rc != 0) {
      self.fail("connack " + std::to_string(rc));
      return;
    }
    client->connected = true;
    ++self.connected_;
    if (client->receiver) {
      char topic[48];
      std::snprintf(topic, sizeof(topic), "bench/%d/%zu", self.options_.workerIndex,
                    client->index / 2);
      ++self.subscribing_;
      mosquitto_subscribe(handle, nullptr, topic, 1);
    }
  }

  static void onSubscribe(mosquitto*, void* obj, int, int, const int*) {
    auto* client = static_cast<Client*>(obj);
    if (client->owner->subscribing_ > 0) --client->owner->subscribing_;
  }

  static void onMessage(mosquitto*, void* obj, const mosquitto_message* message) {
    MqttClients& self = *static_cast<Client*>(obj)->owner;
    self.handedOut_ += publishBytes(*message);
    if (self.arrived) {
      ArrivalStamp at =
          self.handedOut_ <= self.peekedBytes_ ? self.peeked_ : ArrivalStamp{0, monotonicNs()};
      self.arrived(static_cast<const char*>(message->payload),
                   static_cast<std::size_t>(message->payloadlen), at);
    }
  }

  const BenchOptions& options_;
  std::size_t flows_;
  DeadlineEpoll epoll_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<Client*> touched_;
  std::size_t pending_ = 0;
  std::size_t subscribing_ = 0;
  std::uint64_t connected_ = 0;
  std::int64_t lastMisc_ = 0;
  // The peek before the read in progress (see the class comment).
  std::vector<char> peekBuffer_ = std::vector<char>(65536);
  ArrivalStamp peeked_;
  std::size_t peekedBytes_ = 0;  // what the peek saw
  std::size_t handedOut_ = 0;    // PUBLISH bytes the message callback got since the peek
  std::string firstFailure_;
};

}  // namespace

int runMqttWorker(const BenchOptions& options, WorkerLink& link) {
  return runPeerWorkerWith<MqttClients>(options, link);
}

}  // namespace switchboard::bench
