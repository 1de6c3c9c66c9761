// The web endpoint of the real host binary, from a C++ WebSocket client (kj-http +
// capnp::WebSocketMessageStream): the Origin policy, a web phone and a TCP phone talking
// through the same messaging service, per-address limits that use X-Forwarded-For only
// from a trusted proxy, and the host holding its Finishes as on TCP. Plus WebAccess on its own.
#include <capnp/compat/websocket-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <chrono>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "net/two_party_connection.h"
#include "recording_phone.h"
#include "running_host.h"
#include "switchboard/proto/client.capnp.h"
#include "web/web_access.h"

namespace switchboard {
namespace {

using integration::RecordingPhone;
using integration::RunningHost;
using integration::waitUntil;
using web::WebAccess;

// ---------------------------------------------------------------- WebAccess

TEST(WebAccess, WithoutAnAllowListOnlyThePagesOwnOriginMayConnect) {
  WebAccess access({}, {});
  EXPECT_FALSE(access.refuseOrigin(std::nullopt, "127.0.0.1:8080"));
  EXPECT_FALSE(access.refuseOrigin("http://127.0.0.1:8080", "127.0.0.1:8080"));
  EXPECT_FALSE(access.refuseOrigin("https://chat.example.com", "chat.example.com"));
  EXPECT_EQ(access.refuseOrigin("http://evil.test", "127.0.0.1:8080"),
            "origin http://evil.test is not this server's own (host 127.0.0.1:8080); list it in "
            "--web-origins");
}

TEST(WebAccess, AnAllowListIsMatchedExactly) {
  WebAccess access({"https://chat.example.com"}, {});
  EXPECT_FALSE(access.refuseOrigin("https://chat.example.com", "internal:8080"));
  EXPECT_EQ(access.refuseOrigin("https://chat.example.com.evil.test", "internal:8080"),
            "origin https://chat.example.com.evil.test is not in --web-origins");
  // The page's own origin is not implied once a list is given.
  EXPECT_EQ(access.refuseOrigin("http://internal:8080", "internal:8080"),
            "origin http://internal:8080 is not in --web-origins");
  WebAccess any({"*"}, {});
  EXPECT_FALSE(any.refuseOrigin("http://anything.test", "x"));
}

TEST(WebAccess, ForwardedForCountsOnlyFromATrustedProxy) {
  WebAccess access({}, {"10.0.0.5", "[::1]:0"});
  EXPECT_EQ(access.effectivePeer("10.0.0.5:4000", "198.51.100.7"), "198.51.100.7:0");
  // The right-most entry is the one the proxy appended; the rest is the client's say-so.
  EXPECT_EQ(access.effectivePeer("10.0.0.5:4000", "1.1.1.1, 203.0.113.9"), "203.0.113.9:0");
  EXPECT_EQ(access.effectivePeer("[::1]:4000", "2001:db8::7"), "[2001:db8::7]:0");
  EXPECT_EQ(access.effectivePeer("10.0.0.6:4000", "198.51.100.7"), "10.0.0.6:4000");
  EXPECT_EQ(access.effectivePeer("10.0.0.5:4000", std::nullopt), "10.0.0.5:4000");
  EXPECT_EQ(web::addressWithoutPort("[::1]:5"), "::1");
  EXPECT_EQ(web::addressWithoutPort("1.2.3.4:5"), "1.2.3.4");
}

// ---------------------------------------------------------------- a web phone

using Clock = std::chrono::steady_clock;

// Records what the server pushes to a web phone, and when its last deliver returned.
class RecordingInbox final : public proto::Inbox::Server {
 public:
  RecordingInbox(std::vector<std::string>& bodies, Clock::time_point* returned)
      : bodies_(bodies), returned_(returned) {}

 protected:
  kj::Promise<void> deliver(DeliverContext context) override {
    for (auto m : context.getParams().getMessages()) {
      auto body = m.getBody();
      bodies_.emplace_back(reinterpret_cast<const char*>(body.begin()), body.size());
    }
    if (returned_) *returned_ = Clock::now();
    return kj::READY_NOW;
  }

 private:
  std::vector<std::string>& bodies_;
  Clock::time_point* returned_;
};

// The web phone's message stream: passes everything through, and records the kind and the
// arrival time of every RPC message the server sent.
class ReceivedMessages final : public capnp::MessageStream {
 public:
  struct Received {
    capnp::rpc::Message::Which kind;
    Clock::time_point at;
  };

  explicit ReceivedMessages(capnp::MessageStream& inner) : inner_(inner) {}

  const std::vector<Received>& received() const { return received_; }

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratchSpace) override {
    return inner_.tryReadMessage(fdSpace, options, scratchSpace)
        .then([this](kj::Maybe<capnp::MessageReaderAndFds>&& read) {
          KJ_IF_MAYBE (message, read) {
            received_.push_back(
                {message->reader->getRoot<capnp::rpc::Message>().which(), Clock::now()});
          }
          return kj::mv(read);
        });
  }
  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

 private:
  capnp::MessageStream& inner_;
  std::vector<Received> received_;
};

// The WebSocket masking keys of the client (RFC 6455 wants them unpredictable).
class DeviceEntropy final : public kj::EntropySource {
 public:
  void generate(kj::ArrayPtr<kj::byte> buffer) override {
    for (auto& b : buffer) b = static_cast<kj::byte>(device_());
  }

 private:
  std::random_device device_;
};

// One WebSocket to /rpc, on this thread's own KJ event loop.
class WebPhone {
 public:
  struct Headers {
    std::optional<std::string> origin;
    std::optional<std::string> forwardedFor;
  };

  WebPhone(kj::AsyncIoContext& io, std::uint16_t port, Headers extra = {}) : io_(io) {
    kj::HttpHeaderTable::Builder builder;
    auto origin = builder.add("Origin");
    auto forwardedFor = builder.add("X-Forwarded-For");
    table_ = builder.build();
    auto address = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope);
    stream_ = address->connect().wait(io.waitScope);
    kj::HttpClientSettings settings;
    settings.entropySource = entropy_;
    http_ = kj::newHttpClient(*table_, *stream_, settings);
    kj::HttpHeaders headers(*table_);
    host_ = "127.0.0.1:" + std::to_string(port);
    headers.set(kj::HttpHeaderId::HOST, host_);
    if (extra.origin) headers.set(origin, *extra.origin);
    if (extra.forwardedFor) headers.set(forwardedFor, *extra.forwardedFor);
    auto response = http_->openWebSocket("/rpc", headers).wait(io.waitScope);
    status_ = response.statusCode;
    KJ_SWITCH_ONEOF(response.webSocketOrBody) {
      KJ_CASE_ONEOF(body, kj::Own<kj::AsyncInputStream>) {
        refusal_ = body->readAllText().wait(io.waitScope).cStr();
      }
      KJ_CASE_ONEOF(socket, kj::Own<kj::WebSocket>) {
        socket_ = kj::mv(socket);
        messages_ = kj::heap<capnp::WebSocketMessageStream>(*socket_);
        received_ = kj::heap<ReceivedMessages>(*messages_);
        network_ =
            kj::heap<capnp::TwoPartyVatNetwork>(*received_, capnp::rpc::twoparty::Side::CLIENT);
        rpc_ = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
            capnp::makeRpcClient(*network_));
        capnp::MallocMessageBuilder vat;
        auto id = vat.initRoot<capnp::rpc::twoparty::VatId>();
        id.setSide(capnp::rpc::twoparty::Side::SERVER);
        gateway_ = rpc_->bootstrap(id).castAs<proto::Gateway>();
      }
    }
  }

  bool connected() const { return socket_.get() != nullptr; }
  unsigned status() const { return status_; }
  const std::string& refusal() const { return refusal_; }
  proto::Gateway::Client gateway() { return KJ_ASSERT_NONNULL(gateway_); }

  // The call's exception text, or "" when it succeeded.
  std::string requestCode(const std::string& phone) {
    auto request = gateway().requestCodeRequest();
    request.setPhone(phone);
    try {
      request.send().wait(io_.waitScope);
      return "";
    } catch (kj::Exception& e) {
      return e.getDescription().cStr();
    }
  }

  std::string verify(const std::string& phone, const std::string& code) {
    auto request = gateway().verifyRequest();
    request.setPhone(phone);
    request.setCode(code);
    request.setDeviceName("web test");
    // The response owns the message `key` points into: keep it while reading.
    auto response = request.send().wait(io_.waitScope);
    auto key = response.getKey();
    return std::string(reinterpret_cast<const char*>(key.begin()), key.size());
  }

  // `delivered`, if given, is set each time the Inbox's deliver returns.
  proto::Session::Client login(const std::string& phone, const std::string& key,
                               std::vector<std::string>& bodies,
                               Clock::time_point* delivered = nullptr) {
    auto request = gateway().loginRequest();
    request.setPhone(phone);
    request.setKey(kj::arrayPtr(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
    request.setInbox(kj::heap<RecordingInbox>(bodies, delivered));
    return request.send().wait(io_.waitScope).getSession();
  }

  // The RPC messages the server sent so far, in order.
  const std::vector<ReceivedMessages::Received>& received() const { return received_->received(); }

  // Runs the event loop until `done` holds (the guard only stops a hang).
  bool pumpUntil(const std::function<bool()>& done) {
    return waitUntil([&] {
      io_.waitScope.poll();
      return done();
    });
  }

 private:
  kj::AsyncIoContext& io_;
  DeviceEntropy entropy_;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<kj::HttpClient> http_;
  std::string host_;
  unsigned status_ = 0;
  std::string refusal_;
  kj::Own<kj::WebSocket> socket_;
  kj::Own<capnp::WebSocketMessageStream> messages_;
  kj::Own<ReceivedMessages> received_;
  kj::Own<capnp::TwoPartyVatNetwork> network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_;
  kj::Maybe<proto::Gateway::Client> gateway_;
};

// The host's web endpoint is asked for port 0 (a free port picked in advance could be taken
// by another program before the host binds it); the log says which port it got.
std::uint16_t startWithWeb(RunningHost& host) {
  host.start();
  const std::string marker = "web app on http://127.0.0.1:";
  std::size_t at = std::string::npos;
  EXPECT_TRUE(waitUntil([&] { return (at = host.log().find(marker)) != std::string::npos; }));
  if (at == std::string::npos) return 0;
  return static_cast<std::uint16_t>(std::stoul(host.log().substr(at + marker.size())));
}

std::string lastCode(const RunningHost& host, const std::string& phone) {
  EXPECT_TRUE(waitUntil([&] { return !host.sms().codes(phone).empty(); }));
  return host.sms().codes(phone).back();
}

TEST(WebEndpoint, RefusesAForeignOriginAndServesItsOwn) {
  RunningHost host({"--web-listen", "127.0.0.1:0"});
  auto port = startWithWeb(host);
  ASSERT_NE(port, 0);
  auto io = kj::setupAsyncIo();

  WebPhone foreign(io, port, {.origin = "http://evil.test", .forwardedFor = std::nullopt});
  EXPECT_FALSE(foreign.connected());
  EXPECT_EQ(foreign.status(), 403u);
  EXPECT_EQ(foreign.refusal(), "origin http://evil.test is not this server's own (host 127.0.0.1:" +
                                   std::to_string(port) + "); list it in --web-origins\n");

  WebPhone own(
      io, port,
      {.origin = "http://127.0.0.1:" + std::to_string(port), .forwardedFor = std::nullopt});
  ASSERT_TRUE(own.connected());
  auto info = own.gateway().serverInfoRequest().send().wait(io.waitScope);
  EXPECT_EQ(std::string(info.getNode().cStr()), "node1");
}

TEST(WebEndpoint, AWebPhoneAndATcpPhoneTalkThroughTheSameService) {
  RunningHost host({"--web-listen", "127.0.0.1:0"});
  auto port = startWithWeb(host);
  ASSERT_NE(port, 0);
  auto io = kj::setupAsyncIo();

  WebPhone web(io, port);
  ASSERT_TRUE(web.connected());
  ASSERT_EQ(web.requestCode("+15550200001"), "");
  std::string key = web.verify("+15550200001", lastCode(host, "+15550200001"));
  std::vector<std::string> bodies;
  auto session = web.login("+15550200001", key, bodies);

  RecordingPhone tcp(host.clientOptions(), "+15550200002");
  tcp.registerAndLogin(host.sms());
  tcp.client().send("+15550200001", "from tcp");
  ASSERT_TRUE(web.pumpUntil([&] { return !bodies.empty(); }));
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "from tcp");

  auto send = session.sendRequest();
  send.setTo("+15550200002");
  send.setClientMsgId("web-1");
  send.setBody(kj::StringPtr("from the web").asBytes());
  send.send().wait(io.waitScope);
  ASSERT_TRUE(tcp.waitForMessages(1));
  auto received = tcp.messages();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].from, "+15550200001");
  EXPECT_EQ(received[0].body, "from the web");

  // Logging in over TCP with the web phone's key kicks the web session (one session per
  // phone, whatever the transport): the host closes the WebSocket.
  RecordingPhone again(host.clientOptions(), "+15550200001");
  again.setKey(key);
  again.login();
  auto ping = session.contactsRequest().send();
  EXPECT_THROW(ping.wait(io.waitScope), kj::Exception);
}

// As on the TCP phone port (RpcTest.AHeldFinishGoesOutWithoutAnotherMessage): the host's
// Finish of a deliver the web phone answered waits for the connection's next message or for
// the flush, and with nothing else to send goes out alone, after at least half the flush delay
// (net::FinishFlush). Sent at once it would arrive about a millisecond after the return.
TEST(WebEndpoint, AHeldFinishGoesOutWithoutAnotherMessage) {
  RunningHost host({"--web-listen", "127.0.0.1:0"});
  auto port = startWithWeb(host);
  ASSERT_NE(port, 0);
  auto io = kj::setupAsyncIo();

  WebPhone web(io, port);
  ASSERT_TRUE(web.connected());
  ASSERT_EQ(web.requestCode("+15550400001"), "");
  std::string key = web.verify("+15550400001", lastCode(host, "+15550400001"));
  std::vector<std::string> bodies;
  Clock::time_point delivered;
  auto session = web.login("+15550400001", key, bodies, &delivered);

  RecordingPhone tcp(host.clientOptions(), "+15550400002");
  tcp.registerAndLogin(host.sms());
  std::size_t before = web.received().size();
  tcp.client().send("+15550400001", "hold my finish");
  ASSERT_TRUE(web.pumpUntil([&] { return !bodies.empty(); }));
  auto finishes = [&] {
    std::size_t count = 0;
    for (std::size_t i = before; i < web.received().size(); ++i) {
      if (web.received()[i].kind == capnp::rpc::Message::FINISH) ++count;
    }
    return count;
  };
  // The host's only call since (the deliver) is finished, by the flush.
  ASSERT_TRUE(web.pumpUntil([&] { return finishes() == 1; }));
  const auto& last = web.received().back();
  EXPECT_EQ(last.kind, capnp::rpc::Message::FINISH);  // nothing else came after it
  auto held = std::chrono::duration_cast<std::chrono::milliseconds>(last.at - delivered);
  constexpr auto kAtLeast =
      std::chrono::milliseconds(net::FinishFlush::kDelay / kj::MILLISECONDS / 2);
  EXPECT_GE(held, kAtLeast) << "the Finish came " << held.count() << " ms after the return";
}

TEST(WebEndpoint, PerAddressLimitsUseForwardedForFromATrustedProxyOnly) {
  RunningHost host({"--web-listen", "127.0.0.1:0", "--web-trusted-proxy", "127.0.0.1",
                    "--plugin-setting", "auth.max-requests-per-peer=2"});
  auto port = startWithWeb(host);
  ASSERT_NE(port, 0);
  auto io = kj::setupAsyncIo();

  WebPhone first(io, port, {.origin = std::nullopt, .forwardedFor = "203.0.113.1"});
  WebPhone second(io, port, {.origin = std::nullopt, .forwardedFor = "203.0.113.2"});
  ASSERT_TRUE(first.connected());
  ASSERT_TRUE(second.connected());
  EXPECT_EQ(first.requestCode("+15550300001"), "");
  EXPECT_EQ(first.requestCode("+15550300002"), "");
  auto refused = first.requestCode("+15550300003");
  EXPECT_NE(refused.find("too many code requests"), std::string::npos) << refused;
  // Another client behind the same proxy has its own allowance.
  EXPECT_EQ(second.requestCode("+15550300003"), "");
}

}  // namespace
}  // namespace switchboard
