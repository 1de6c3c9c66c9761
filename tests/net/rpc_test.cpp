// Cap'n Proto RPC end to end over RpcListener / RpcConnection.

#include "net/asio_stream.h"
#include "net/direct_client.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/rpc_listener.h"

#include "frame_tap.h"
#include "test_service.capnp.h"
#include "wait_until.h"

#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

namespace switchboard::net {
namespace {

using testing::waitUntil;

// Server objects alive and calls to hang() in progress, across all server threads.
std::atomic<int> liveServers{0};
std::atomic<int> hangingCalls{0};

class TestServiceImpl final : public TestService::Server {
 public:
  // `direct`: capabilities it hands out (child()) are served directly too.
  explicit TestServiceImpl(ConnectionInfo info, bool direct = false)
      : info_(std::move(info)), direct_(direct) {
    ++liveServers;
  }
  ~TestServiceImpl() { --liveServers; }

  kj::Promise<void> echo(EchoContext context) override {
    std::string text = context.getParams().getText();
    context.getResults().setText(name_.empty() ? text : name_ + ":" + text);
    return kj::READY_NOW;
  }

  kj::Promise<void> hang(HangContext context) override {
    context.allowCancellation();
    ++hangingCalls;
    auto paf = kj::newPromiseAndFulfiller<void>();
    hangers_.push_back(kj::mv(paf.fulfiller));
    return paf.promise.attach(kj::defer([] { --hangingCalls; }));
  }

  kj::Promise<void> release(ReleaseContext context) override {
    uint32_t released = 0;
    for (auto& hanger : hangers_) {
      if (hanger->isWaiting()) ++released;
      hanger->fulfill();
    }
    hangers_.clear();
    context.getResults().setReleased(released);
    return kj::READY_NOW;
  }

  // A new service whose echo says its name first: "name:text".
  kj::Promise<void> child(ChildContext context) override {
    auto child = kj::heap<TestServiceImpl>(info_, direct_);
    child->name_ = context.getParams().getName();
    if (direct_) {
      context.getResults().setChild(serveDirectly<TestService>(kj::mv(child)));
    } else {
      context.getResults().setChild(kj::mv(child));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> childLater(ChildLaterContext context) override {
    auto paf = kj::newPromiseAndFulfiller<void>();
    hangers_.push_back(kj::mv(paf.fulfiller));
    return paf.promise.then([this, context]() mutable -> kj::Promise<void> {
      std::string name = context.getParams().getName();
      if (context.getParams().getFail()) KJ_FAIL_REQUIRE("no child for", name);
      auto child = kj::heap<TestServiceImpl>(info_, direct_);
      child->name_ = name;
      if (direct_) {
        context.getResults().setChild(serveDirectly<TestService>(kj::mv(child)));
      } else {
        context.getResults().setChild(kj::mv(child));
      }
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> fail(FailContext context) override {
    std::string why = context.getParams().getWhy();
    if (!context.getParams().getLater()) KJ_FAIL_REQUIRE("failed at once", why);
    return kj::evalLater([why]() -> kj::Promise<void> { KJ_FAIL_REQUIRE("failed later", why); });
  }

  kj::Promise<void> callBack(CallBackContext context) override {
    auto params = context.getParams();
    // Kept: dropping it would send a Release after the call, and a Release goes out at once.
    targets_.push_back(params.getTarget());
    auto request = targets_.back().echoRequest();
    request.setText(params.getText());
    calls_.add(request.send().ignoreResult());
    return kj::READY_NOW;
  }

  kj::Promise<void> whoAmI(WhoAmIContext context) override {
    auto results = context.getResults();
    results.setPeer(info_.peer);
    results.setThreadIndex(static_cast<uint32_t>(info_.threadIndex));
    results.setConnectionId(info_.connectionId);
    return kj::READY_NOW;
  }

 private:
  ConnectionInfo info_;
  bool direct_ = false;
  std::string name_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> hangers_;
  std::vector<TestService::Client> targets_;
  struct : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  } ignoreFailures_;
  kj::TaskSet calls_{ignoreFailures_};
};

// `direct`: the bootstrap is served through serveDirectly (direct_client.h), as the host's
// Gateway and Session are, instead of capnp's LocalClient.
BootstrapFactory testBootstrap(bool direct) {
  return [direct](const ConnectionInfo& info) -> capnp::Capability::Client {
    if (direct) return serveDirectly<TestService>(kj::heap<TestServiceImpl>(info, true));
    return kj::heap<TestServiceImpl>(info);
  };
}

// One client connection owned by, and only touched on, `thread`.
class TestClient {
 public:
  TestClient(NetworkThread& thread, const std::string& endpoint) : thread_(thread) {
    thread_.runSync([&] {
      return RpcConnection::connect(thread_, endpoint).then([this](kj::Own<RpcConnection> c) {
        connection_ = kj::mv(c);
        service_ = connection_->bootstrapAs<TestService>();
      });
    });
  }
  ~TestClient() { close(); }

  void close() {
    if (connection_.get() == nullptr) return;
    thread_.runSync([&] {
      service_.reset();
      connection_ = nullptr;
    });
  }

  std::string echo(const std::string& text) {
    return thread_.runSync([&] { return echoOnLoop(text); });
  }

  // Loop thread only.
  kj::Promise<std::string> echoOnLoop(const std::string& text) {
    auto request = service_->echoRequest();
    request.setText(text);
    return request.send().then([](capnp::Response<TestService::EchoResults>&& response) {
      return std::string(response.getText().cStr());
    });
  }
  TestService::Client& service() { return *service_; }

 private:
  NetworkThread& thread_;
  kj::Own<RpcConnection> connection_;           // loop thread only
  std::optional<TestService::Client> service_;  // loop thread only
};

// The client's side of callBack(): an echo that counts its calls.
class CountingEcho final : public TestService::Server {
 public:
  explicit CountingEcho(std::atomic<int>& calls) : calls_(calls) {}
  kj::Promise<void> echo(EchoContext context) override {
    ++calls_;
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }

 private:
  std::atomic<int>& calls_;
};

// Every test runs twice: the bootstrap through capnp's LocalClient, and served directly.
class RpcTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ASSERT_EQ(liveServers.load(), 0);
    ASSERT_EQ(hangingCalls.load(), 0);
    serverA.start();
    serverB.start();
    clientThread.start();
  }
  void TearDown() override {
    listener.reset();
    EXPECT_EQ(liveServers.load(), 0);
  }

  void listen(std::vector<NetworkThread*> threads, const std::string& endpoint = "127.0.0.1:0",
              ConnectionLimits limits = {}) {
    listener.emplace(
        std::move(threads), endpoint, testBootstrap(GetParam()),
        [this](const ConnectionInfo&) { ++disconnects; }, limits);
  }

  NetworkThread serverA{"server-a"};
  NetworkThread serverB{"server-b"};
  NetworkThread clientThread{"client"};
  std::atomic<int> disconnects{0};
  std::optional<RpcListener> listener;  // declared after the threads: destroyed before them
};

TEST_P(RpcTest, EchoWithClientAndServerOnTheSameThread) {
  listen({&serverA});
  ASSERT_NE(listener->port(), 0);
  TestClient client(serverA, listener->boundEndpoint());
  EXPECT_EQ(client.echo("hello"), "hello");
  EXPECT_EQ(listener->connectionCount(), 1u);
}

TEST_P(RpcTest, EchoWithClientAndServerOnDifferentThreads) {
  listen({&serverA});
  TestClient client(clientThread, listener->boundEndpoint());
  EXPECT_EQ(client.echo("across threads"), "across threads");

  auto who = clientThread.runSync([&] {
    return client.service().whoAmIRequest().send().then(
        [](capnp::Response<TestService::WhoAmIResults>&& response) {
          return std::make_tuple(std::string(response.getPeer().cStr()), response.getThreadIndex(),
                                 response.getConnectionId());
        });
  });
  EXPECT_EQ(std::get<0>(who).rfind("127.0.0.1:", 0), 0u) << std::get<0>(who);
  EXPECT_EQ(std::get<1>(who), 0u);
  EXPECT_EQ(std::get<2>(who), 1u);
}

TEST_P(RpcTest, UnixSocketEndpoint) {
  std::string path = "/tmp/switchboard-net-test-" + std::to_string(::getpid()) + ".sock";
  listen({&serverA, &serverB}, path);
  EXPECT_EQ(listener->port(), 0);
  {
    TestClient client(clientThread, path);
    EXPECT_EQ(client.echo("over unix"), "over unix");
  }
  listener.reset();
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file left behind";
}

TEST_P(RpcTest, ManyConcurrentConnectionsAcrossThreads) {
  listen({&serverA, &serverB});
  constexpr int kClients = 300;
  constexpr int kCallsEach = 5;
  const std::string endpoint = listener->boundEndpoint();

  // All clients live on clientThread; connect and call concurrently, all in flight at once.
  std::vector<kj::Own<RpcConnection>> connections;  // loop thread only
  std::vector<std::uint64_t> connectionIds;         // loop thread only, then read after
  std::vector<std::uint32_t> serverThreads;         // loop thread only, then read after
  int correct = clientThread.runSync([&] {
    auto calls = kj::heapArrayBuilder<kj::Promise<int>>(kClients);
    for (int i = 0; i < kClients; ++i) {
      calls.add(RpcConnection::connect(clientThread, endpoint)
                    .then([&, i](kj::Own<RpcConnection> connection) {
                      auto service = connection->bootstrapAs<TestService>();
                      connections.push_back(kj::mv(connection));
                      auto replies = kj::heapArrayBuilder<kj::Promise<int>>(kCallsEach);
                      for (int k = 0; k < kCallsEach; ++k) {
                        std::string text = std::to_string(i) + "/" + std::to_string(k);
                        auto request = service.echoRequest();
                        request.setText(text);
                        replies.add(request.send().then(
                            [text](capnp::Response<TestService::EchoResults>&& response) {
                              return response.getText() == text.c_str() ? 1 : 0;
                            }));
                      }
                      auto who = service.whoAmIRequest().send().then(
                          [&](capnp::Response<TestService::WhoAmIResults>&& response) {
                            connectionIds.push_back(response.getConnectionId());
                            serverThreads.push_back(response.getThreadIndex());
                          });
                      return kj::joinPromises(replies.finish())
                          .then([who = kj::mv(who)](kj::Array<int> ok) mutable {
                            int sum = 0;
                            for (int v : ok) sum += v;
                            return who.then([sum] { return sum; });
                          });
                    }));
    }
    return kj::joinPromises(calls.finish()).then([](kj::Array<int> ok) {
      int sum = 0;
      for (int v : ok) sum += v;
      return sum;
    });
  });
  EXPECT_EQ(correct, kClients * kCallsEach);
  EXPECT_EQ(listener->connectionCount(), static_cast<size_t>(kClients));
  EXPECT_EQ(liveServers.load(), kClients);

  // Connection ids are unique, and SO_REUSEPORT spread the connections over both threads.
  // The kernel hashes by 4-tuple, so the shares vary; that all 300 land on one of two
  // threads has a probability of 2^-299.
  ASSERT_EQ(connectionIds.size(), static_cast<std::size_t>(kClients));
  EXPECT_EQ(std::set<std::uint64_t>(connectionIds.begin(), connectionIds.end()).size(),
            static_cast<std::size_t>(kClients));
  ASSERT_EQ(serverThreads.size(), static_cast<std::size_t>(kClients));
  auto onFirst = std::count(serverThreads.begin(), serverThreads.end(), 0u);
  auto onSecond = std::count(serverThreads.begin(), serverThreads.end(), 1u);
  EXPECT_EQ(onFirst + onSecond, kClients) << "a connection reported a thread index other than 0, 1";
  EXPECT_GT(onFirst, 0) << "thread 0 got no connection";
  EXPECT_GT(onSecond, 0) << "thread 1 got no connection";
  clientThread.runSync([&] { connections.clear(); });
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  EXPECT_TRUE(waitUntil([&] { return liveServers.load() == 0; }));
  EXPECT_TRUE(waitUntil([&] { return disconnects.load() == kClients; }));
}

TEST_P(RpcTest, PeerDisconnectingMidCallReleasesTheServerSide) {
  listen({&serverA});
  auto client = std::make_unique<TestClient>(clientThread, listener->boundEndpoint());
  std::optional<kj::Promise<void>> hang;  // loop thread only
  clientThread.runSync([&] {
    hang.emplace(client->service().hangRequest().send().ignoreResult().eagerlyEvaluate(nullptr));
  });
  ASSERT_TRUE(waitUntil([] { return hangingCalls.load() == 1; }));
  EXPECT_EQ(listener->connectionCount(), 1u);

  client->close();  // the socket goes away with a call in flight
  EXPECT_TRUE(waitUntil([] { return hangingCalls.load() == 0; }));
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  EXPECT_TRUE(waitUntil([] { return liveServers.load() == 0; }));
  EXPECT_EQ(disconnects.load(), 1);

  // The client's own pending call fails cleanly rather than hanging or crashing.
  std::string outcome = clientThread.runSync([&] {
    return kj::mv(*hang).then([]() -> std::string { return "returned"; },
                              [](kj::Exception&& exception) -> std::string {
                                return exception.getType() == kj::Exception::Type::DISCONNECTED
                                           ? "disconnected"
                                           : exception.getDescription().cStr();
                              });
  });
  EXPECT_EQ(outcome, "disconnected");
  clientThread.runSync([&] { hang.reset(); });
}

// The server holds its Finish of a call it made for the connection's next message; with no
// next message, the network's flush sends it (ServerVatNetwork::kFinishDelay).
TEST_P(RpcTest, AHeldFinishGoesOutWithoutAnotherMessage) {
  listen({&serverA});
  std::optional<RpcConnection> connection;  // loop thread only
  FrameTap* tap = nullptr;
  std::atomic<int> echoed{0};
  clientThread.runSync([&] {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(listener->port());
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    KJ_SYSCALL(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)));
    KJ_SYSCALL(::fcntl(fd, F_SETFL, O_NONBLOCK));
    auto stream = kj::heap<FrameTap>(kj::heap<AsioStream>(clientThread.ioContext(), fd));
    tap = stream.get();
    connection.emplace(clientThread.ioContext(), kj::mv(stream));
  });
  std::string answer = clientThread.runSync([&] {
    auto request = connection->bootstrapAs<TestService>().callBackRequest();
    request.setTarget(kj::heap<CountingEcho>(echoed));
    request.setText("back");
    return request.send().then([](auto&&) { return std::string("returned"); });
  });
  EXPECT_EQ(answer, "returned");
  ASSERT_TRUE(waitUntil([&] { return echoed.load() == 1; }));
  auto finishes = [&] {
    return clientThread.runSync([&] {
      const auto& got = tap->received();
      return std::count(got.begin(), got.end(), capnp::rpc::Message::FINISH);
    });
  };
  // The server's only call (echo on our target) is finished, by the flush.
  ASSERT_TRUE(waitUntil([&] { return finishes() == 1; }));
  clientThread.runSync([&] {
    const auto& got = tap->received();
    EXPECT_EQ(got.back(), capnp::rpc::Message::FINISH);  // nothing else came after it
    connection.reset();
  });
}

// Without ConnectionLimits::holdBootstrap a connection keeps its bootstrap object only while
// the peer holds it: once the client has dropped the capability, the server object is gone
// while the connection stays open (an idle phone keeps no Gateway); a later bootstrap on that
// connection gets a new one, made for the same connection.
TEST_P(RpcTest, AReleasedBootstrapIsNotKeptByTheConnectionUnlessHeld) {
  ConnectionLimits limits;
  limits.holdBootstrap = false;
  listen({&serverA}, "127.0.0.1:0", limits);
  kj::Own<RpcConnection> connection;  // loop thread only
  clientThread.runSync([&] {
    return RpcConnection::connect(clientThread, listener->boundEndpoint())
        .then([&](kj::Own<RpcConnection> opened) {
          connection = kj::mv(opened);
          auto request = connection->bootstrapAs<TestService>().echoRequest();
          request.setText("once");
          return request.send().ignoreResult();  // the capability is dropped here
        });
  });
  // Its Release goes out at once, the bootstrap's Finish with the flush (within 100 ms).
  ASSERT_TRUE(waitUntil([] { return liveServers.load() == 0; }));
  EXPECT_EQ(listener->connectionCount(), 1u);

  auto connectionId = clientThread.runSync([&] {
    return connection->bootstrapAs<TestService>().whoAmIRequest().send().then(
        [](capnp::Response<TestService::WhoAmIResults>&& response) {
          return response.getConnectionId();
        });
  });
  EXPECT_EQ(connectionId, 1u);
  clientThread.runSync([&] { connection = nullptr; });
  EXPECT_TRUE(waitUntil([] { return liveServers.load() == 0; }));
}

TEST_P(RpcTest, CancelledCallLeavesTheConnectionWorking) {
  listen({&serverA});
  TestClient client(clientThread, listener->boundEndpoint());
  clientThread.runSync([&] {
    auto call = client.service().hangRequest().send();
    // Dropped at the end of this function: the client sends Finish, the server cancels.
  });
  EXPECT_TRUE(waitUntil([] { return hangingCalls.load() == 0; }));
  EXPECT_EQ(client.echo("still here"), "still here");

  // A call that is released rather than cancelled completes normally.
  uint32_t released = clientThread.runSync([&] {
    auto hang = client.service().hangRequest().send();
    return kj::evalLater([] {}).then([&, hang = kj::mv(hang)]() mutable {
      return client.service().releaseRequest().send().then(
          [hang = kj::mv(hang)](capnp::Response<TestService::ReleaseResults>&& response) mutable {
            uint32_t count = response.getReleased();
            return hang.ignoreResult().then([count] { return count; });
          });
    });
  });
  EXPECT_EQ(released, 1u);
  EXPECT_EQ(listener->connectionCount(), 1u);
}

TEST_P(RpcTest, LargeMessagesRoundTrip) {
  // Larger than the phone port's limits allow (connection_limits_test.cpp tests those).
  ConnectionLimits limits;
  limits.maxMessageBytes = 8 << 20;
  limits.callFlowLimitBytes = 16 << 20;
  listen({&serverA}, "127.0.0.1:0", limits);
  TestClient client(clientThread, listener->boundEndpoint());
  for (size_t size : {size_t{1} << 20, size_t{4} << 20}) {
    std::string text(size, '\0');
    for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('A' + (i * 31 + i / 977) % 26);
    std::string back = client.echo(text);
    EXPECT_EQ(back.size(), text.size());
    EXPECT_TRUE(back == text) << "payload of " << size << " bytes corrupted";
  }
  // Several large calls in flight at once on one connection.
  int intact = clientThread.runSync([&] {
    auto calls = kj::heapArrayBuilder<kj::Promise<int>>(6);
    for (int i = 0; i < 6; ++i) {
      std::string text(1 << 20, static_cast<char>('a' + i));
      calls.add(
          client.echoOnLoop(text).then([text](std::string back) { return back == text ? 1 : 0; }));
    }
    return kj::joinPromises(calls.finish()).then([](kj::Array<int> ok) {
      int sum = 0;
      for (int v : ok) sum += v;
      return sum;
    });
  });
  EXPECT_EQ(intact, 6);
}

TEST_P(RpcTest, ListeningOnABusyPortGivesAClearError) {
  listen({&serverA, &serverB});
  std::string busy = listener->boundEndpoint();
  try {
    RpcListener second({&serverB}, busy, testBootstrap(GetParam()));
    FAIL() << "second listener on " << busy << " succeeded";
  } catch (std::runtime_error& error) {
    EXPECT_EQ(std::string(error.what()), "cannot listen on " + busy + ": Address already in use");
  }
  // The first listener is unharmed.
  TestClient client(clientThread, busy);
  EXPECT_EQ(client.echo("still listening"), "still listening");
}

// One RpcSystem serves every connection of a thread: each bootstrap a peer asks for is still
// its own connection's (many connecting at once, and a second bootstrap on one connection),
// and after disconnectAll() new connections are served again.
TEST_P(RpcTest, EveryBootstrapIsItsOwnConnectionsWithOneRpcSystemPerThread) {
  listen({&serverA});
  const std::string endpoint = listener->boundEndpoint();
  constexpr int kClients = 100;
  std::vector<kj::Own<RpcConnection>> connections;  // loop thread only
  // Per client: its own address as it sees it, and the peer each bootstrap's server saw.
  std::vector<std::string> own(kClients), first(kClients), second(kClients);
  auto peerOf = [](capnp::Capability::Client bootstrap) {
    return bootstrap.castAs<TestService>().whoAmIRequest().send().then(
        [](capnp::Response<TestService::WhoAmIResults>&& response) {
          return std::string(response.getPeer().cStr());
        });
  };
  clientThread.runSync([&] {
    auto all = kj::heapArrayBuilder<kj::Promise<void>>(kClients);
    for (int i = 0; i < kClients; ++i) {
      all.add(RpcConnection::connect(clientThread, endpoint)
                  .then([&, i](kj::Own<RpcConnection> connection) {
                    sockaddr_in local{};
                    kj::uint length = sizeof(local);
                    connection->stream().getsockname(reinterpret_cast<sockaddr*>(&local), &length);
                    own[i] = "127.0.0.1:" + std::to_string(ntohs(local.sin_port));
                    auto asked = peerOf(connection->bootstrap());
                    auto askedAgain = peerOf(connection->bootstrap());
                    connections.push_back(kj::mv(connection));
                    return asked.then(
                        [&, i, askedAgain = kj::mv(askedAgain)](std::string peer) mutable {
                          first[i] = peer;
                          return askedAgain.then([&, i](std::string again) { second[i] = again; });
                        });
                  }));
    }
    return kj::joinPromises(all.finish());
  });
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(first[i], own[i]) << "client " << i;
    EXPECT_EQ(second[i], own[i]) << "client " << i;
  }
  EXPECT_EQ(listener->connectionCount(), static_cast<size_t>(kClients));

  listener->disconnectAll();
  EXPECT_EQ(listener->connectionCount(), 0u);
  clientThread.runSync([&] { connections.clear(); });
  TestClient later(clientThread, endpoint);
  EXPECT_EQ(later.echo("served again"), "served again");
  EXPECT_EQ(listener->connectionCount(), 1u);
}

TEST_P(RpcTest, StopAcceptingKeepsLiveConnectionsThenDisconnectAllDropsThem) {
  listen({&serverA});
  std::string endpoint = listener->boundEndpoint();
  TestClient client(clientThread, endpoint);
  // Connected is not yet accepted: a call proves the server took the connection, which
  // matters because closing an acceptor resets what is still in its backlog.
  EXPECT_EQ(client.echo("accepted"), "accepted");
  listener->stopAccepting();
  EXPECT_EQ(client.echo("served"), "served");
  std::string refused = clientThread.runSync([&] {
    return RpcConnection::connect(clientThread, endpoint)
        .then([](kj::Own<RpcConnection>) -> std::string { return "connected"; },
              [](kj::Exception&& exception) -> std::string {
                return exception.getDescription().cStr();
              });
  });
  EXPECT_EQ(refused, "cannot connect to " + endpoint + ": Connection refused");

  listener->disconnectAll();
  EXPECT_EQ(listener->connectionCount(), 0u);
  EXPECT_EQ(liveServers.load(), 0);
  EXPECT_THROW(client.echo("gone"), std::runtime_error);
}

TEST_P(RpcTest, DisconnectOneConnectionById) {
  listen({&serverA});
  TestClient kept(clientThread, listener->boundEndpoint());
  TestClient cut(clientThread, listener->boundEndpoint());
  EXPECT_EQ(kept.echo("first"), "first");
  EXPECT_EQ(cut.echo("second"), "second");
  ASSERT_EQ(listener->connectionCount(), 2u);

  listener->disconnect(0, 12345);  // unknown: ignored
  listener->disconnect(7, 2);      // no such thread: ignored
  listener->disconnect(0, 2);      // the second connection accepted
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 1; }));
  EXPECT_TRUE(waitUntil([&] { return disconnects.load() == 1; }));
  EXPECT_THROW(cut.echo("gone"), std::runtime_error);
  EXPECT_EQ(kept.echo("still here"), "still here");

  // From the connection's own loop thread the cut is made directly, without a post.
  serverA.runSync([&] { listener->disconnect(0, 1); });
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  EXPECT_THROW(kept.echo("gone too"), std::runtime_error);
}

TEST_P(RpcTest, ACallPipelinedOnAReturnedCapabilityReachesIt) {
  listen({&serverA});
  TestClient client(clientThread, listener->boundEndpoint());
  std::string echoed = clientThread.runSync([&] {
    auto request = client.service().childRequest();
    request.setName("kid");
    auto child = request.send().getChild();  // not waited for: the echo is pipelined
    auto echo = child.echoRequest();
    echo.setText("hi");
    return echo.send().then([](capnp::Response<TestService::EchoResults>&& response) {
      return std::string(response.getText().cStr());
    });
  });
  EXPECT_EQ(echoed, "kid:hi");
  EXPECT_EQ(client.echo("parent"), "parent");
  client.close();
  EXPECT_TRUE(waitUntil([] { return liveServers.load() == 0; }));
}

// Calls pipelined on the results of a call still in progress wait for it: they reach the
// capability it returns, or fail with its error.
TEST_P(RpcTest, ACallPipelinedOnACallStillInProgressWaitsForItsResults) {
  listen({&serverA});
  TestClient client(clientThread, listener->boundEndpoint());
  for (bool fail : {false, true}) {
    std::string echoed = clientThread.runSync([&] {
      auto request = client.service().childLaterRequest();
      request.setName("late");
      request.setFail(fail);
      auto later = request.send();
      auto echo = later.getChild().echoRequest();  // pipelined: the child does not exist yet
      echo.setText("hi");
      auto echoed = echo.send().then(
          [](capnp::Response<TestService::EchoResults>&& response) {
            return std::string(response.getText().cStr());
          },
          [](kj::Exception&& e) { return std::string("failed: ") + e.getDescription().cStr(); });
      // Sent after both: the server holds the first call until this one comes.
      auto release = client.service().releaseRequest().send();
      return release.then([echoed = kj::mv(echoed)](auto&&) mutable { return kj::mv(echoed); })
          .attach(kj::mv(later));
    });
    if (fail) {
      EXPECT_NE(echoed.find("failed: "), std::string::npos) << echoed;
      EXPECT_NE(echoed.find("no child for"), std::string::npos) << echoed;
      EXPECT_NE(echoed.find("late"), std::string::npos) << echoed;
    } else {
      EXPECT_EQ(echoed, "late:hi");
    }
  }
  EXPECT_EQ(client.echo("after"), "after");
}

TEST_P(RpcTest, AFailingCallCarriesItsErrorAndTheConnectionGoesOn) {
  listen({&serverA});
  TestClient client(clientThread, listener->boundEndpoint());
  for (bool later : {false, true}) {
    std::string error = clientThread.runSync([&] {
      auto request = client.service().failRequest();
      request.setWhy("the reason");
      request.setLater(later);
      return request.send().then(
          [](auto&&) -> std::string { return "returned"; },
          [](kj::Exception&& e) -> std::string { return e.getDescription().cStr(); });
    });
    EXPECT_NE(error.find(later ? "failed later" : "failed at once"), std::string::npos) << error;
    EXPECT_NE(error.find("the reason"), std::string::npos) << error;
  }
  EXPECT_EQ(client.echo("after"), "after");
}

// The server ends of this process's TCP connections on `port` (not the listening sockets):
// for each, whether TCP_NODELAY and TCP_INQ are on.
std::vector<std::pair<int, int>> acceptedSocketOptions(uint16_t port) {
  std::vector<std::pair<int, int>> found;
  DIR* fds = ::opendir("/proc/self/fd");
  if (fds == nullptr) return found;
  while (dirent* entry = ::readdir(fds)) {
    int fd = std::atoi(entry->d_name);
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    if (fd <= 2 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) continue;
    if (local.ss_family != AF_INET) continue;
    if (ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port) != port) continue;
    int listening = 0, noDelay = 0, inq = 0;
    socklen_t size = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size);
    if (listening) continue;
    ::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &noDelay, &size);
    ::getsockopt(fd, SOL_TCP, TCP_INQ, &inq, &size);
    found.emplace_back(noDelay, inq);
  }
  ::closedir(fds);
  return found;
}

// The listener sets both options on its listening sockets and the accepted ones inherit them
// (no setsockopt per connection); either way every accepted socket must have them.
TEST_P(RpcTest, EveryAcceptedSocketHasNoDelayAndTheReadHint) {
  listen({&serverA, &serverB});
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<TestClient>(clientThread, listener->boundEndpoint()));
    EXPECT_EQ(clients.back()->echo("hi"), "hi");
  }
  auto options = acceptedSocketOptions(listener->port());
  ASSERT_EQ(options.size(), 4u);
  for (auto [noDelay, inq] : options) {
    EXPECT_EQ(noDelay, 1);
    EXPECT_EQ(inq, 1);
  }
}

TEST(DirectClient, CallsMadeInProcessReachTheServer) {
  NetworkThread thread("direct");
  thread.start();
  std::string echoed = thread.runSync([&] {
    auto service = serveDirectly<TestService>(kj::heap<TestServiceImpl>(ConnectionInfo{}, true));
    auto request = service.childRequest();
    request.setName("local");
    auto echo = request.send().getChild().echoRequest();
    echo.setText("call");
    return echo.send()
        .then([](capnp::Response<TestService::EchoResults>&& response) {
          return std::string(response.getText().cStr());
        })
        .attach(kj::mv(service));
  });
  EXPECT_EQ(echoed, "local:call");
  EXPECT_TRUE(waitUntil([] { return liveServers.load() == 0; }));
}

INSTANTIATE_TEST_SUITE_P(LocalAndDirect, RpcTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Direct" : "LocalClient";
                         });

}  // namespace
}  // namespace switchboard::net
