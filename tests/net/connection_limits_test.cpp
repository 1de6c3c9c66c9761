// RpcListener's connection limits through real sockets: a message announced larger than
// allowed, a peer pipelining calls without reading the replies, the login deadline and the
// per-address bound. Each bad peer is disconnected with a log line and costs bounded memory.
// And LimitedMessageStream's own framing over an AsioStream (reading ahead, writing batches),
// and a client's connection over one (ClientVatNetwork: taken at once, written at once, held
// to the client's limits).

#include "net/connection_limits.h"
#include "net/asio_stream.h"
#include "net/asio_timer.h"
#include "net/client_vat_network.h"
#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/rpc_listener.h"
#include "sanitizer_memory.h"

#include "test_service.capnp.h"
#include "wait_until.h"

#include <arpa/inet.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::net {
namespace {

using testing::waitUntil;

class EchoService final : public TestService::Server {
 public:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }
  kj::Promise<void> whoAmI(WhoAmIContext context) override {
    KJ_FAIL_REQUIRE("whoAmI refused here");
  }
};

// Every line logged, for the tests to look for the one about their peer.
class LogLines final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  bool contains(const std::string& text) { return count(text) > 0; }
  size_t count(const std::string& text) {
    std::lock_guard lock(mutex_);
    size_t found = 0;
    for (const auto& line : lines_)
      if (line.find(text) != std::string::npos) ++found;
    return found;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& message) override {
    lines_.emplace_back(message.payload.data(), message.payload.size());
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

size_t residentBytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      size_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  return 0;
}

int connectRaw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True once the server has closed `fd` (EOF or reset), reading and discarding what it sent.
bool closedByServer(int fd) {
  char buffer[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30'000) != 1) return false;  // a hang guard, not a measurement
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

kj::Array<capnp::word> serialize(capnp::MessageBuilder& message) {
  return capnp::messageToFlatArray(message);
}

kj::Array<capnp::word> bootstrapMessage(uint32_t questionId) {
  capnp::MallocMessageBuilder message;
  message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(questionId);
  return serialize(message);
}

// TestService.echo("x") on the answer to question 0 (the bootstrap).
kj::Array<capnp::word> echoCallMessage(uint32_t questionId) {
  capnp::MallocMessageBuilder message;
  auto call = message.initRoot<capnp::rpc::Message>().initCall();
  call.setQuestionId(questionId);
  call.initTarget().initPromisedAnswer().setQuestionId(0);
  call.setInterfaceId(capnp::typeId<TestService>());
  call.setMethodId(0);
  call.initParams().getContent().initAs<TestService::EchoParams>().setText("x");
  return serialize(message);
}

class ConnectionLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log = std::make_shared<LogLines>();
    previous = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("limits", log));
    server.start();
    client.start();
  }
  void TearDown() override {
    listener.reset();
    spdlog::set_default_logger(previous);
  }

  void listen(ConnectionLimits limits, std::function<void(const ConnectionInfo&)> onAccept = {}) {
    listener.emplace(
        std::vector<NetworkThread*>{&server}, "127.0.0.1:0",
        [onAccept](const ConnectionInfo& info) -> capnp::Capability::Client {
          if (onAccept) onAccept(info);
          return kj::heap<EchoService>();
        },
        DisconnectHook(), limits);
  }

  // An RPC client on `client`: echo through it, or "" once it is disconnected.
  struct Phone {
    kj::Own<RpcConnection> connection;
    std::optional<TestService::Client> service;
  };
  std::string echo(Phone& phone, const std::string& text) {
    return client.runSync([&] {
      auto request = phone.service->echoRequest();
      request.setText(text);
      return request.send().then(
          [](capnp::Response<TestService::EchoResults>&& response) {
            return std::string(response.getText().cStr());
          },
          [](kj::Exception&&) { return std::string(); });
    });
  }
  std::unique_ptr<Phone> connect() {
    auto phone = std::make_unique<Phone>();
    client.runSync([&] {
      return RpcConnection::connect(client, listener->boundEndpoint())
          .then([&](kj::Own<RpcConnection> connection) {
            phone->connection = kj::mv(connection);
            phone->service = phone->connection->bootstrapAs<TestService>();
          });
    });
    return phone;
  }
  void close(std::unique_ptr<Phone>& phone) {
    client.runSync([&] {
      phone->service.reset();
      phone->connection = nullptr;
    });
    phone.reset();
  }

  std::shared_ptr<LogLines> log;
  std::shared_ptr<spdlog::logger> previous;
  NetworkThread server{"server"};
  NetworkThread client{"client"};
  std::optional<RpcListener> listener;  // declared after the threads: destroyed before them
};

TEST_F(ConnectionLimitsTest, AFourGibSegmentIsRefusedBeforeAnythingIsAllocated) {
  listen({});
  size_t before = residentBytes();
  int fd = connectRaw(listener->port());
  ASSERT_GE(fd, 0);
  // Segment table: one segment of 0x20000000 words = 4 GiB, then a little of it.
  uint32_t table[2] = {0, 0x20000000u};
  ASSERT_EQ(::send(fd, table, sizeof(table), MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(table)));
  std::vector<char> some(4096, 'z');
  ::send(fd, some.data(), some.size(), MSG_NOSIGNAL);
  EXPECT_TRUE(closedByServer(fd));
  ::close(fd);
  EXPECT_TRUE(waitUntil([&] { return log->contains("Message is too large"); }));
  EXPECT_TRUE(log->contains("disconnecting 127.0.0.1:"));
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  EXPECT_LT(residentBytes(), before + (64u << 20));
  // The listener still serves others.
  auto phone = connect();
  EXPECT_EQ(echo(*phone, "after"), "after");
  close(phone);
}

// The stream reads with the limits' nesting limit: a message nested deeper than it fails
// when read that deep, one within it reads whole (capnp's default limit, 64, would let
// the deep one through). The phone
// protocol has no deep structures, so this is defence in depth; rpc.capnp's Message nests
// through `unimplemented`, which makes the deep message here.
TEST(LimitedMessageStream, ReadsWithTheNestingLimit) {
  auto io = kj::setupAsyncIo();
  auto nested = [](int depth) {
    capnp::MallocMessageBuilder message;
    auto level = message.initRoot<capnp::rpc::Message>();
    for (int i = 0; i < depth; ++i) level = level.initUnimplemented();
    level.initBootstrap().setQuestionId(7);
    return capnp::messageToFlatArray(message);
  };
  auto depthOf = [](capnp::rpc::Message::Reader message) {
    int depth = 0;
    while (message.isUnimplemented()) {
      message = message.getUnimplemented();
      ++depth;
    }
    return depth;
  };
  auto pipe = kj::newTwoWayPipe();
  ConnectionLimits limits;
  limits.nestingLimit = 16;
  LimitedMessageStream stream(*pipe.ends[1], limits, {});
  for (int depth : {10, 40}) {
    auto words = nested(depth);
    // An in-memory pipe: the write completes as the read takes it.
    auto written = pipe.ends[0]->write(words.asBytes().begin(), words.asBytes().size());
    auto read = stream.tryReadMessage(nullptr, {}, nullptr).wait(io.waitScope);
    written.wait(io.waitScope);
    KJ_IF_MAYBE (message, read) {
      auto root = message->reader->getRoot<capnp::rpc::Message>();
      if (depth == 10) {
        EXPECT_EQ(depthOf(root), 10);
      } else {
        try {
          depthOf(root);
          ADD_FAILURE() << "a message 40 deep was read whole past a nesting limit of 16";
        } catch (const kj::Exception& e) {
          std::string what = e.getDescription().cStr();
          EXPECT_NE(what.find("too deeply-nested"), std::string::npos) << what;
        }
      }
    } else {
      ADD_FAILURE() << "no message at depth " << depth;
    }
  }
}

// Three RPC messages as capnp frames them: a Bootstrap (one segment), a Bootstrap in two
// segments (its table padded to a whole word) and a Finish (one segment).
std::vector<kj::Array<capnp::word>> threeMessages(std::vector<capnp::word>& framed) {
  std::vector<kj::Array<capnp::word>> messages;
  {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(1);
    messages.push_back(capnp::messageToFlatArray(message));
  }
  {
    // A first segment of three words holds the root pointer and the Message struct; the
    // Bootstrap struct goes to a second.
    capnp::MallocMessageBuilder message(3, capnp::AllocationStrategy::FIXED_SIZE);
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(2);
    EXPECT_EQ(message.getSegmentsForOutput().size(), 2u);
    messages.push_back(capnp::messageToFlatArray(message));
  }
  {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initFinish().setQuestionId(1);
    messages.push_back(capnp::messageToFlatArray(message));
  }
  for (auto& words : messages) framed.insert(framed.end(), words.begin(), words.end());
  return messages;
}

// Over an AsioStream the stream frames a batch itself (tables and pieces on the stack): the
// bytes are capnp's, padding included.
TEST(LimitedMessageStream, WritesABatchOverAnAsioStreamAsCapnpFramesIt) {
  NetworkThread thread{"limits-test"};
  thread.start();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  std::vector<capnp::word> expected;
  auto messages = threeMessages(expected);
  std::vector<std::unique_ptr<capnp::FlatArrayMessageReader>> readers;
  for (auto& words : messages)
    readers.push_back(std::make_unique<capnp::FlatArrayMessageReader>(words));
  std::unique_ptr<AsioStream> stream;  // loop thread only
  thread.runSync([&] {
    stream = std::make_unique<AsioStream>(thread.ioContext(), fds[0]);
    LimitedMessageStream limited(*stream, ConnectionLimits{}, {});
    std::vector<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> batch;
    std::vector<kj::Array<kj::ArrayPtr<const capnp::word>>> segments;
    for (auto& reader : readers) {
      kj::Vector<kj::ArrayPtr<const capnp::word>> table;
      for (capnp::uint i = 0; reader->getSegment(i) != nullptr; ++i) {
        table.add(reader->getSegment(i));
      }
      segments.push_back(table.releaseAsArray());
      batch.push_back(segments.back());
    }
    return limited.writeMessages(kj::arrayPtr(batch.data(), batch.size()));
  });
  std::vector<capnp::word> got(expected.size());
  size_t bytes = 0;
  while (bytes < got.size() * sizeof(capnp::word)) {
    pollfd p{fds[1], POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30'000), 1);  // a hang guard, not a measurement
    ssize_t n = ::recv(fds[1], reinterpret_cast<char*>(got.data()) + bytes,
                       got.size() * sizeof(capnp::word) - bytes, 0);
    ASSERT_GT(n, 0);
    bytes += static_cast<size_t>(n);
  }
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), bytes), 0);
  thread.runSync([&] { stream = nullptr; });
  ::close(fds[1]);
  thread.stop();
}

// Messages a peer pipelined in one write are read ahead together, by the first one asked for;
// each is taken from what the stream holds when it is asked for (a message of one segment
// whole, before its promise is waited on), and all read back as sent, the one of two segments
// too.
TEST(LimitedMessageStream, TakesMessagesAlreadyReadAheadAtOnce) {
  NetworkThread thread{"limits-test"};
  thread.start();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  std::vector<capnp::word> framed;
  auto messages = threeMessages(framed);
  const size_t total = framed.size() * sizeof(capnp::word);
  ASSERT_EQ(::send(fds[1], framed.data(), total, MSG_NOSIGNAL), static_cast<ssize_t>(total));
  std::unique_ptr<AsioStream> stream;             // loop thread only
  std::unique_ptr<LimitedMessageStream> limited;  // loop thread only
  thread.runSync([&] {
    stream = std::make_unique<AsioStream>(thread.ioContext(), fds[0]);
    limited = std::make_unique<LimitedMessageStream>(*stream, ConnectionLimits{},
                                                     LimitedMessageStream::ViolationHandler());
  });
  struct Read {
    capnp::rpc::Message::Which kind;
    uint32_t question;
    size_t leftWhenAsked;  // what the stream still held right after tryReadMessage() returned
  };
  auto readOne = [&] {
    return thread.runSync([&] {
      auto promise = limited->tryReadMessage(nullptr, {}, nullptr);
      size_t left = stream->bufferedReadBytes();
      return promise.then([left](kj::Maybe<capnp::MessageReaderAndFds>&& read) {
        auto& message = KJ_ASSERT_NONNULL(read);
        auto root = message.reader->getRoot<capnp::rpc::Message>();
        uint32_t question = root.isBootstrap() ? root.getBootstrap().getQuestionId()
                                               : root.getFinish().getQuestionId();
        return Read{root.which(), question, left};
      });
    });
  };
  Read first = readOne();
  EXPECT_EQ(first.kind, capnp::rpc::Message::BOOTSTRAP);
  EXPECT_EQ(first.question, 1u);
  // Read from the socket and taken whole at once: the rest is the other two.
  EXPECT_EQ(first.leftWhenAsked, total - messages[0].asBytes().size());
  Read second = readOne();
  EXPECT_EQ(second.kind, capnp::rpc::Message::BOOTSTRAP);
  EXPECT_EQ(second.question, 2u);
  Read third = readOne();
  EXPECT_EQ(third.kind, capnp::rpc::Message::FINISH);
  EXPECT_EQ(third.question, 1u);
  EXPECT_EQ(third.leftWhenAsked, 0u);  // taken whole at once, not just its first word
  thread.runSync([&] {
    limited = nullptr;
    stream = nullptr;
  });
  ::close(fds[1]);
  thread.stop();
}

// plainMessageKind reads the kind of a message whose root struct is in its first segment, and
// leaves any other (a far pointer to a struct in another segment) to capnp.
TEST(PlainMessageKind, ReadsTheRootInTheFirstSegmentOnly) {
  capnp::MallocMessageBuilder finish;
  finish.initRoot<capnp::rpc::Message>().initFinish().setQuestionId(3);
  EXPECT_EQ(KJ_ASSERT_NONNULL(plainMessageKind(finish.getSegmentsForOutput()[0])),
            capnp::rpc::Message::FINISH);
  std::vector<capnp::word> framed;
  auto messages = threeMessages(framed);  // the second: Message in segment 0, Bootstrap in 1
  capnp::FlatArrayMessageReader twoSegments(messages[1]);
  EXPECT_EQ(KJ_ASSERT_NONNULL(plainMessageKind(twoSegments.getSegment(0))),
            capnp::rpc::Message::BOOTSTRAP);
  // A first segment of one word: the root pointer is a far pointer.
  capnp::MallocMessageBuilder far(1, capnp::AllocationStrategy::FIXED_SIZE);
  far.initRoot<capnp::rpc::Message>().initFinish().setQuestionId(4);
  EXPECT_TRUE(plainMessageKind(far.getSegmentsForOutput()[0]) == nullptr);
  EXPECT_TRUE(plainMessageKind(nullptr) == nullptr);
}

// A stream over one end of a socketpair, on a network thread; the test writes the other end.
class ImmediateStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread.start();
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    peer = fds[1];
    thread.runSync([&] {
      stream = std::make_unique<AsioStream>(thread.ioContext(), fds[0]);
      limited = std::make_unique<LimitedMessageStream>(
          *stream, limits, [this](const std::string& reason) { violations.push_back(reason); });
    });
  }
  void TearDown() override {
    thread.runSync([&] {
      limited = nullptr;
      stream = nullptr;
    });
    ::close(peer);
    thread.stop();
  }
  void sendFromPeer(const void* data, size_t size) {
    ASSERT_EQ(::send(peer, data, size, MSG_NOSIGNAL), static_cast<ssize_t>(size));
  }
  // takeWholeMessage() on the loop thread: the message's kind and question id (or its error),
  // or "none" when it took nothing; and what the stream holds after.
  std::pair<std::string, size_t> take() {
    return thread.runSync([&]() -> kj::Promise<std::pair<std::string, size_t>> {
      KJ_IF_MAYBE (taken, limited->takeWholeMessage()) {
        return taken->then(
            [this](kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>&& message) {
              auto root = KJ_ASSERT_NONNULL(message)->getBody().getAs<capnp::rpc::Message>();
              uint32_t question = root.isBootstrap() ? root.getBootstrap().getQuestionId()
                                                     : root.getFinish().getQuestionId();
              std::string what = root.isBootstrap() ? "bootstrap " : "finish ";
              return std::make_pair(what + std::to_string(question), stream->bufferedReadBytes());
            },
            [this](kj::Exception&& e) {
              return std::make_pair(std::string("failed: ") + e.getDescription().cStr(),
                                    stream->bufferedReadBytes());
            });
      }
      return std::make_pair(std::string("none"), stream->bufferedReadBytes());
    });
  }

  NetworkThread thread{"immediate-test"};
  ConnectionLimits limits;
  int peer = -1;
  std::vector<std::string> violations;            // loop thread only
  std::unique_ptr<AsioStream> stream;             // loop thread only
  std::unique_ptr<LimitedMessageStream> limited;  // loop thread only
};

// takeWholeMessage() takes a whole message of one segment (read ahead now, or already), and
// leaves everything else where it is for tryReadMessage(): a message of two segments, half a
// message.
TEST_F(ImmediateStreamTest, TakesAWholeOneSegmentMessageAndLeavesTheRestToTryReadMessage) {
  std::vector<capnp::word> framed;
  auto messages = threeMessages(framed);
  const size_t total = framed.size() * sizeof(capnp::word);
  capnp::MallocMessageBuilder fourth;
  fourth.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(4);
  auto fourthWords = capnp::messageToFlatArray(fourth);
  auto fourthBytes = fourthWords.asBytes();
  sendFromPeer(framed.data(), total);
  sendFromPeer(fourthBytes.begin(), fourthBytes.size() - 8);  // all but its last word

  const size_t afterFirst = total - messages[0].asBytes().size() + fourthBytes.size() - 8;
  EXPECT_EQ(take(), std::make_pair(std::string("bootstrap 1"), afterFirst));
  // Two segments: not taken, nothing consumed.
  EXPECT_EQ(take(), std::make_pair(std::string("none"), afterFirst));
  uint32_t second = thread.runSync([&] {
    return limited->tryReadMessage(nullptr, {}, nullptr)
        .then([](kj::Maybe<capnp::MessageReaderAndFds>&& read) {
          auto& message = KJ_ASSERT_NONNULL(read);
          return message.reader->getRoot<capnp::rpc::Message>().getBootstrap().getQuestionId();
        });
  });
  EXPECT_EQ(second, 2u);
  EXPECT_EQ(take(), std::make_pair(std::string("finish 1"), fourthBytes.size() - 8));
  // Half a message: not taken, and not waited for by whenNothingToRead() either.
  EXPECT_EQ(take(), std::make_pair(std::string("none"), fourthBytes.size() - 8));
  EXPECT_TRUE(thread.runSync([&] { return limited->whenNothingToRead() == nullptr; }));
  sendFromPeer(fourthBytes.end() - 8, 8);
  uint32_t fourthRead = thread.runSync([&] {
    return limited->tryReadMessage(nullptr, {}, nullptr)
        .then([](kj::Maybe<capnp::MessageReaderAndFds>&& read) {
          auto& message = KJ_ASSERT_NONNULL(read);
          return message.reader->getRoot<capnp::rpc::Message>().getBootstrap().getQuestionId();
        });
  });
  EXPECT_EQ(fourthRead, 4u);
  // Nothing left and nothing on the socket: nothing taken, and the wait is for readability.
  EXPECT_EQ(take(), std::make_pair(std::string("none"), size_t{0}));
  EXPECT_TRUE(thread.runSync([&] { return limited->whenNothingToRead() != nullptr; }));
  EXPECT_TRUE(thread.runSync([&] { return violations.empty(); }));
}

// A connection over the fixture's stream, as the host's are (TwoPartyConnection over a
// LimitedMessageStream over an AsioStream).
class TestConnection final : public TwoPartyConnection {
 public:
  using TwoPartyConnection::TwoPartyConnection;
  capnp::rpc::twoparty::VatId::Reader getPeerVatId() override {
    return vatIdOf(capnp::rpc::twoparty::Side::CLIENT);
  }
};

// With nothing to read, a connection's next message waits for the socket: a whole message is
// taken at its edge, one that arrives in two parts is read whole the general way, and the
// peer's close ends the wait with no message.
TEST_F(ImmediateStreamTest, TheNextMessageAfterAWaitArrivesWholeInPartsOrNotAtAll) {
  std::unique_ptr<TestConnection> connection;                                  // loop thread only
  kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>> next;  // loop thread
  auto startWaiting = [&] {
    thread.runSync([&] {
      if (connection == nullptr) connection = std::make_unique<TestConnection>(*limited, *stream);
      next = connection->receiveIncomingMessage();
    });
  };
  // The question id of the message the wait ended with, or -1 for none.
  auto waited = [&] {
    return thread.runSync([&]() -> kj::Promise<int64_t> {
      auto promise = kj::mv(KJ_ASSERT_NONNULL(next));
      next = nullptr;
      return promise.then([](kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>&& message) -> int64_t {
        KJ_IF_MAYBE (m, message) {
          return (*m)->getBody().getAs<capnp::rpc::Message>().getBootstrap().getQuestionId();
        }
        return -1;
      });
    });
  };
  auto bootstrap = [](uint32_t question) {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(question);
    return capnp::messageToFlatArray(message);
  };
  // The first read finds the socket empty (EAGAIN); the connection then waits.
  EXPECT_EQ(take().first, "none");

  startWaiting();
  auto whole = bootstrap(7);
  sendFromPeer(whole.begin(), whole.asBytes().size());
  EXPECT_EQ(waited(), 7);
  EXPECT_EQ(thread.runSync([&] { return stream->bufferedReadBytes(); }), 0u);

  EXPECT_EQ(take().first, "none");  // empty again
  startWaiting();
  auto parts = bootstrap(8);
  auto bytes = parts.asBytes();
  sendFromPeer(bytes.begin(), 12);  // the segment table and half a word
  // The edge read the part (the socket holds nothing); the rest is waited for the general way.
  int fd = thread.runSync([&] { return KJ_ASSERT_NONNULL(stream->getFd()); });
  ASSERT_TRUE(waitUntil([&] {
    int pending = -1;
    return ::ioctl(fd, FIONREAD, &pending) == 0 && pending == 0;
  }));
  sendFromPeer(bytes.begin() + 12, bytes.size() - 12);
  EXPECT_EQ(waited(), 8);

  EXPECT_EQ(take().first, "none");
  startWaiting();
  ::shutdown(peer, SHUT_WR);
  EXPECT_EQ(waited(), -1);
  EXPECT_TRUE(thread.runSync([&] { return violations.empty(); }));
  thread.runSync([&] { connection = nullptr; });
}

// A call taken at once is counted as tryReadMessage() counts it: one too many fails with the
// reason, reported once.
TEST_F(ImmediateStreamTest, ACallTakenAtOnceOneTooManyFailsWithTheReason) {
  thread.runSync([&] {
    limits.maxCallsInFlight = 1;
    limited = std::make_unique<LimitedMessageStream>(
        *stream, limits, [this](const std::string& reason) { violations.push_back(reason); });
  });
  std::vector<capnp::word> framed;
  for (uint32_t question : {1u, 2u}) {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(question);
    auto words = capnp::messageToFlatArray(message);
    framed.insert(framed.end(), words.begin(), words.end());
  }
  sendFromPeer(framed.data(), framed.size() * sizeof(capnp::word));
  EXPECT_EQ(take().first, "bootstrap 1");
  const std::string reason = "more than 1 calls in flight (replies not read?)";
  EXPECT_EQ(take().first, "failed: " + reason);
  EXPECT_EQ(thread.runSync([&] { return violations; }), std::vector<std::string>{reason});
}

// A message whose root points outside it is refused with capnp's reason; one whose root is
// null is no call (an Unimplemented) and is taken.
TEST_F(ImmediateStreamTest, AMessageWhoseRootPointsOutsideItIsUnreadable) {
  // Segment table (one segment of two words), then the root: a struct pointer 5 words on,
  // with one data word, in a segment of two.
  const uint32_t outside[6] = {0, 2, (5u << 2), 1, 0, 0};
  sendFromPeer(outside, sizeof(outside));
  std::string failure = take().first;
  EXPECT_NE(failure.find("failed: unreadable message: "), std::string::npos) << failure;
  EXPECT_NE(failure.find("out-of-bounds"), std::string::npos) << failure;
  EXPECT_EQ(thread.runSync([&] { return violations.size(); }), 1u);
}

TEST_F(ImmediateStreamTest, AMessageWithANullRootIsTakenAndIsNoCall) {
  const uint32_t empty[4] = {0, 1, 0, 0};
  sendFromPeer(empty, sizeof(empty));
  auto kind = thread.runSync([&]() -> kj::Promise<int> {
    auto taken = KJ_ASSERT_NONNULL(limited->takeWholeMessage());
    return taken.then([](kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>&& message) {
      return static_cast<int>(
          KJ_ASSERT_NONNULL(message)->getBody().getAs<capnp::rpc::Message>().which());
    });
  });
  EXPECT_EQ(kind, static_cast<int>(capnp::rpc::Message::UNIMPLEMENTED));
  EXPECT_EQ(thread.runSync([&] { return limited->callsInFlight(); }), 0u);
}

// writeMessagesNow() frames the batch as writeMessages() does and counts the Returns it writes.
TEST_F(ImmediateStreamTest, WritesNowFramedAsCapnpDoesAndCountsTheReturn) {
  capnp::MallocMessageBuilder call;
  call.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(5);
  auto callWords = capnp::messageToFlatArray(call);
  sendFromPeer(callWords.begin(), callWords.asBytes().size());
  EXPECT_EQ(take().first, "bootstrap 5");
  EXPECT_EQ(thread.runSync([&] { return limited->callsInFlight(); }), 1u);

  capnp::MallocMessageBuilder reply;
  reply.initRoot<capnp::rpc::Message>().initReturn().setAnswerId(5);
  auto expected = capnp::messageToFlatArray(reply);
  bool written = thread.runSync([&] {
    auto segments = reply.getSegmentsForOutput();
    return limited->writeMessagesNow(kj::arrayPtr(&segments, 1));
  });
  EXPECT_TRUE(written);
  EXPECT_EQ(thread.runSync([&] { return limited->callsInFlight(); }), 0u);
  std::vector<kj::byte> got(expected.asBytes().size());
  size_t bytes = 0;
  while (bytes < got.size()) {
    pollfd p{peer, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30'000), 1);  // a hang guard, not a measurement
    ssize_t n = ::recv(peer, got.data() + bytes, got.size() - bytes, 0);
    ASSERT_GT(n, 0);
    bytes += static_cast<size_t>(n);
  }
  EXPECT_EQ(std::memcmp(got.data(), expected.asBytes().begin(), got.size()), 0);
}

// ------------------------------------------------------------------ a client's connection
// The client end of an RPC connection over an AsioStream: a message the stream holds is taken
// whole at once, an idle connection's next message is taken when it comes, messages below the
// stream's mark are written at once and in order (a held Finish before the message that takes
// it), and what the server sends is held to the client's limits (a message over them fails the
// connection's calls with the reason).

using Incoming = kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>;

// A Return for `answer`, as a server sends it.
kj::Array<capnp::word> returnMessage(uint32_t answer) {
  capnp::MallocMessageBuilder message;
  message.initRoot<capnp::rpc::Message>().initReturn().setAnswerId(answer);
  return capnp::messageToFlatArray(message);
}

uint32_t answerOf(Incoming&& message) {
  auto root = KJ_ASSERT_NONNULL(message)->getBody().getAs<capnp::rpc::Message>();
  return root.getReturn().getAnswerId();
}

// A client's connection (ClientVatNetwork, TwoPartyRpcClient) over the fixture's stream, as
// RpcConnection makes it, with the test as the server on the socketpair's other end. (The
// fixture's own LimitedMessageStream stays unused.)
class ClientVatNetworkTest : public ImmediateStreamTest {
 protected:
  // kj::Own's destructor may throw; TearDown() emptied every member on the loop thread.
  ~ClientVatNetworkTest() noexcept override {}

  void SetUp() override {
    ImmediateStreamTest::SetUp();
    thread.runSync([&] { timer = std::make_unique<AsioTimer>(thread.ioContext()); });
  }
  void TearDown() override {
    thread.runSync([&] {
      connection = nullptr;
      network = nullptr;
      client = nullptr;
      timer = nullptr;
    });
    ImmediateStreamTest::TearDown();
  }

  // The network and its one connection, as the RPC system gets it from connect().
  void openConnection() {
    thread.runSync([&] {
      network = std::make_unique<ClientVatNetwork>(*stream, *timer);
      capnp::MallocMessageBuilder id(4);
      auto server = id.initRoot<capnp::rpc::twoparty::VatId>();
      server.setSide(capnp::rpc::twoparty::Side::SERVER);
      connection = KJ_ASSERT_NONNULL(network->connect(server.asReader()));
    });
  }

  // `size` bytes the client wrote, read on the peer's end.
  std::vector<kj::byte> readFromPeer(size_t size) {
    std::vector<kj::byte> got(size);
    size_t bytes = 0;
    while (bytes < size) {
      pollfd p{peer, POLLIN, 0};
      if (::poll(&p, 1, 30'000) != 1) break;  // a hang guard, not a measurement
      ssize_t n = ::recv(peer, got.data() + bytes, size - bytes, 0);
      if (n <= 0) break;
      bytes += static_cast<size_t>(n);
    }
    got.resize(bytes);
    return got;
  }

  // What an echo call through a TwoPartyRpcClient with `clientLimits` fails with once the peer (the
  // server) sent `bytes` ("no failure" if it returned), and whether the client then reported
  // its disconnect.
  std::pair<std::string, bool> echoFailureAfter(kj::ArrayPtr<const kj::byte> bytes,
                                                const ConnectionLimits& clientLimits) {
    kj::Maybe<kj::Promise<std::string>> outcome;  // loop thread only
    thread.runSync([&] {
      client =
          std::make_unique<TwoPartyRpcClient>(*stream, *timer, FinishFlush::kDelay, clientLimits);
      auto request = client->bootstrap().castAs<TestService>().echoRequest();
      request.setText("hello");
      outcome = request.send().then(
          [](capnp::Response<TestService::EchoResults>&&) { return std::string("no failure"); },
          [](kj::Exception&& e) {
            std::string type = e.getType() == kj::Exception::Type::DISCONNECTED
                                   ? "DISCONNECTED: "
                                   : "not DISCONNECTED: ";
            return type + e.getDescription().cStr();
          });
    });
    sendFromPeer(bytes.begin(), bytes.size());
    std::string failure = thread.runSync([&] {
      auto promise = kj::mv(KJ_ASSERT_NONNULL(outcome));
      outcome = nullptr;
      return promise;
    });
    bool disconnected =
        thread.runSync([&] { return client->onDisconnect().then([] { return true; }); });
    return {failure, disconnected};
  }

  std::unique_ptr<AsioTimer> timer;                               // loop thread only
  std::unique_ptr<ClientVatNetwork> network;                      // loop thread only
  kj::Own<capnp::TwoPartyVatNetworkBase::Connection> connection;  // loop thread only
  std::unique_ptr<TwoPartyRpcClient> client;                      // loop thread only
};

// Asked for its next message, the connection takes a whole message the stream holds before
// the call returns (capnp's own reader took only its first word then, and read the rest
// promise by promise), and leaves the next where it is; with nothing there, it takes the next
// message when it comes.
TEST_F(ClientVatNetworkTest, AMessageTheStreamHoldsIsTakenWholeAtOnce) {
  openConnection();
  auto first = returnMessage(1);
  auto second = returnMessage(2);
  std::vector<kj::byte> both(first.asBytes().begin(), first.asBytes().end());
  both.insert(both.end(), second.asBytes().begin(), second.asBytes().end());
  sendFromPeer(both.data(), both.size());

  auto receive = [&] {
    return thread.runSync([&] {
      auto promise = connection->receiveIncomingMessage();
      size_t left = stream->bufferedReadBytes();  // what the call left in the stream
      return promise.then(
          [left](Incoming&& message) { return std::make_pair(answerOf(kj::mv(message)), left); });
    });
  };
  EXPECT_EQ(receive(), std::make_pair(uint32_t{1}, second.asBytes().size()));
  EXPECT_EQ(receive(), std::make_pair(uint32_t{2}, size_t{0}));

  // Nothing there: the connection waits, and takes the next message as it comes.
  kj::Maybe<kj::Promise<Incoming>> next;  // loop thread only
  thread.runSync([&] { next = connection->receiveIncomingMessage(); });
  auto third = returnMessage(3);
  sendFromPeer(third.begin(), third.asBytes().size());
  uint32_t answer = thread.runSync([&] {
    auto promise = kj::mv(KJ_ASSERT_NONNULL(next));
    next = nullptr;
    return promise.then([](Incoming&& message) { return answerOf(kj::mv(message)); });
  });
  EXPECT_EQ(answer, 3u);
  EXPECT_EQ(thread.runSync([&] { return stream->bufferedReadBytes(); }), 0u);
}

// Each message sent is in the stream's buffer when send() returns, the one before it still
// there too (no write in flight holds the second back until a later turn); a Finish waits
// for the next message, which takes it along, before it. The peer reads them in that order.
TEST_F(ClientVatNetworkTest, MessagesBelowTheMarkAreWrittenAtOnceInOrder) {
  openConnection();
  std::vector<size_t> buffered = thread.runSync([&] {
    std::vector<size_t> after;
    auto send = [&](auto build) {
      auto message = connection->newOutgoingMessage(0);
      build(message->getBody().initAs<capnp::rpc::Message>());
      message->send();
      after.push_back(stream->bufferedWriteBytes());
    };
    send([](capnp::rpc::Message::Builder m) { m.initCall().setQuestionId(1); });
    send([](capnp::rpc::Message::Builder m) { m.initFinish().setQuestionId(0); });
    send([](capnp::rpc::Message::Builder m) { m.initCall().setQuestionId(2); });
    return after;
  });
  ASSERT_EQ(buffered.size(), 3u);
  EXPECT_GT(buffered[0], 0u);
  EXPECT_EQ(buffered[1], buffered[0]);  // the Finish waits
  EXPECT_GT(buffered[2], buffered[1]);  // with the second Call, at once

  std::vector<kj::byte> bytes = readFromPeer(buffered[2]);
  ASSERT_EQ(bytes.size(), buffered[2]);
  std::vector<std::pair<capnp::rpc::Message::Which, uint32_t>> got;
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  kj::ArrayPtr<const capnp::word> rest = words;
  while (rest.size() > 0) {
    capnp::FlatArrayMessageReader reader(rest);
    auto root = reader.getRoot<capnp::rpc::Message>();
    got.emplace_back(root.which(), root.isCall() ? root.getCall().getQuestionId()
                                                 : root.getFinish().getQuestionId());
    rest = kj::arrayPtr(reader.getEnd(), rest.end());
  }
  using capnp::rpc::Message;
  EXPECT_EQ(got, (std::vector<std::pair<Message::Which, uint32_t>>{
                     {Message::CALL, 1}, {Message::FINISH, 0}, {Message::CALL, 2}}));
}

// A server that announces a message over the client's limits (here a segment of 4 GiB, over
// kClientConnectionLimits' 64 MiB) fails the connection before anything is allocated for it:
// the calls in flight fail with the reason, and the client reports its disconnect.
TEST_F(ClientVatNetworkTest, AMessageOverTheClientsLimitFailsItsCallsWithTheReason) {
  const uint32_t table[2] = {0, 0x20000000u};  // one segment of 2^29 words
  auto [failure, disconnected] =
      echoFailureAfter(kj::arrayPtr(table, 2).asBytes(), kClientConnectionLimits);
  EXPECT_EQ(failure,
            "DISCONNECTED: unreadable message: Message is too large (4294967296 bytes; the limit "
            "is 67108864)");
  EXPECT_TRUE(disconnected);
}

// The same with limits of a client's own (one given to TwoPartyRpcClient): 100 KiB over 64 KiB.
TEST_F(ClientVatNetworkTest, AMessageOverLimitsGivenFailsItsCallsWithTheReason) {
  ConnectionLimits small = kClientConnectionLimits;
  small.maxMessageBytes = 64 * 1024;
  const uint32_t table[2] = {0, 100 * 1024 / 8};
  auto [failure, disconnected] = echoFailureAfter(kj::arrayPtr(table, 2).asBytes(), small);
  EXPECT_EQ(failure,
            "DISCONNECTED: unreadable message: Message is too large (102400 bytes; the limit is "
            "65536)");
  EXPECT_TRUE(disconnected);
}

TEST_F(ConnectionLimitsTest, AMessageOverTheSizeLimitDisconnects) {
  ConnectionLimits limits;
  limits.maxMessageBytes = 64 * 1024;
  listen(limits);
  auto phone = connect();
  EXPECT_EQ(echo(*phone, std::string(1000, 'a')), std::string(1000, 'a'));
  EXPECT_EQ(echo(*phone, std::string(100 * 1024, 'b')), "");  // refused: the connection drops
  EXPECT_TRUE(waitUntil([&] { return log->contains("Message is too large"); }));
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  close(phone);
}

TEST_F(ConnectionLimitsTest, AMillionPipelinedCallsWithoutReadingDisconnect) {
  listen({});
  size_t before = residentBytes();
  int fd = connectRaw(listener->port());
  ASSERT_GE(fd, 0);
  auto boot = bootstrapMessage(0);
  ASSERT_GT(::send(fd, boot.begin(), boot.asBytes().size(), MSG_NOSIGNAL), 0);
  // Calls are written in batches; the replies are never read.
  constexpr uint32_t kCalls = 1'000'000;
  uint32_t sent = 0;
  bool cut = false;
  while (sent < kCalls && !cut) {
    std::vector<kj::byte> batch;
    for (uint32_t i = 0; i < 1000; ++i) {
      auto call = echoCallMessage(1 + sent + i);
      batch.insert(batch.end(), call.asBytes().begin(), call.asBytes().end());
    }
    size_t offset = 0;
    while (offset < batch.size()) {
      ssize_t n = ::send(fd, batch.data() + offset, batch.size() - offset, MSG_NOSIGNAL);
      if (n <= 0) {
        cut = true;
        break;
      }
      offset += static_cast<size_t>(n);
    }
    if (!cut) sent += 1000;
  }
  EXPECT_TRUE(cut) << "all " << sent << " calls were accepted";
  EXPECT_LT(sent, kCalls);
  ::close(fd);
  EXPECT_TRUE(waitUntil([&] { return log->contains("calls in flight"); }));
  EXPECT_TRUE(log->contains("more than 4096 calls in flight"));
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 0; }));
  EXPECT_LT(residentBytes(), before + (128u << 20) * switchboard::testing::kSanitizerMemoryFactor);
}

TEST_F(ConnectionLimitsTest, PipelinedCallsThatAreReadStayConnected) {
  listen({});
  auto phone = connect();
  // 10,000 calls in flight from the client's side; it reads every reply, so the server never
  // holds more than it can write.
  size_t intact = client.runSync([&] {
    auto calls = kj::heapArrayBuilder<kj::Promise<size_t>>(10'000);
    for (int i = 0; i < 10'000; ++i) {
      auto request = phone->service->echoRequest();
      request.setText("p");
      calls.add(request.send().then([](capnp::Response<TestService::EchoResults>&& r)
                                        -> size_t { return r.getText() == "p" ? 1 : 0; },
                                    [](kj::Exception&&) -> size_t { return 0; }));
    }
    return kj::joinPromises(calls.finish()).then([](kj::Array<size_t> ok) {
      size_t sum = 0;
      for (size_t v : ok) sum += v;
      return sum;
    });
  });
  // Up to 4096 unanswered at once is allowed; a client reading its replies sees them all.
  EXPECT_EQ(intact, 10'000u);
  EXPECT_EQ(echo(*phone, "still"), "still");
  close(phone);
}

TEST_F(ConnectionLimitsTest, AConnectionNotLoggedInByTheDeadlineIsClosed) {
  ConnectionLimits limits;
  limits.loginDeadline = std::chrono::milliseconds(300);
  std::vector<ConnectionInfo> accepted;
  std::mutex acceptedMutex;
  listen(limits, [&](const ConnectionInfo& info) {
    std::lock_guard lock(acceptedMutex);
    accepted.push_back(info);
  });
  auto loggedIn = connect();
  ASSERT_EQ(echo(*loggedIn, "hello"), "hello");
  {
    std::lock_guard lock(acceptedMutex);
    ASSERT_EQ(accepted.size(), 1u);
    listener->markLoggedIn(accepted[0].threadIndex, accepted[0].connectionId);
  }
  auto anonymous = connect();
  ASSERT_EQ(echo(*anonymous, "hello"), "hello");
  // The anonymous one is closed at its deadline; the logged-in one, whose deadline passed
  // earlier, is still served.
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 1; }));
  EXPECT_EQ(echo(*anonymous, "late"), "");
  EXPECT_EQ(echo(*loggedIn, "still here"), "still here");
  EXPECT_TRUE(log->contains("not logged in within 300 ms"));
  close(anonymous);
  close(loggedIn);
}

// The deadlines are one queue per thread with one timer for its front: a connection that
// comes after the queue emptied gets its own deadline too, a logged-in one never does, and
// one that left before its deadline is not cut (nor counted) twice.
TEST_F(ConnectionLimitsTest, EachConnectionGetsItsOwnDeadlineWhenTheyComeAtDifferentTimes) {
  ConnectionLimits limits;
  // Long enough for three connects, echoes and a close on a loaded box (the leaving one must
  // go before its deadline); not a timing assertion.
  limits.loginDeadline = std::chrono::milliseconds(1500);
  std::vector<ConnectionInfo> accepted;
  std::mutex acceptedMutex;
  size_t disconnected = 0;
  listener.emplace(
      std::vector<NetworkThread*>{&server}, "127.0.0.1:0",
      [&](const ConnectionInfo& info) -> capnp::Capability::Client {
        std::lock_guard lock(acceptedMutex);
        accepted.push_back(info);
        return kj::heap<EchoService>();
      },
      [&](const ConnectionInfo&) {
        std::lock_guard lock(acceptedMutex);
        ++disconnected;
      },
      limits);
  auto disconnects = [&] {
    std::lock_guard lock(acceptedMutex);
    return disconnected;
  };
  auto first = connect();
  auto loggedIn = connect();
  auto leaving = connect();
  ASSERT_EQ(echo(*first, "a"), "a");
  ASSERT_EQ(echo(*loggedIn, "b"), "b");
  ASSERT_EQ(echo(*leaving, "c"), "c");
  {
    std::lock_guard lock(acceptedMutex);
    ASSERT_EQ(accepted.size(), 3u);
    listener->markLoggedIn(accepted[1].threadIndex, accepted[1].connectionId);
  }
  close(leaving);  // goes before its deadline
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 1; }));
  EXPECT_TRUE(waitUntil([&] { return disconnects() == 2; }));
  EXPECT_EQ(echo(*first, "late"), "");
  // The queue is empty now: a later connection starts the timer again.
  auto later = connect();
  ASSERT_EQ(echo(*later, "d"), "d");
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 1; }));
  EXPECT_TRUE(waitUntil([&] { return disconnects() == 3; }));
  EXPECT_EQ(echo(*later, "late"), "");
  EXPECT_EQ(echo(*loggedIn, "still here"), "still here");
  EXPECT_EQ(log->count("not logged in within 1500 ms"), 2u);
  EXPECT_EQ(disconnects(), 3u);
  close(first);
  close(later);
  close(loggedIn);
  listener.reset();  // its hooks use this test's locals: none may run after it returns
}

TEST_F(ConnectionLimitsTest, ConnectionsPerPeerAddressAreBounded) {
  ConnectionLimits limits;
  limits.maxConnectionsPerPeer = 2;
  listen(limits);
  auto first = connect();
  auto second = connect();
  EXPECT_EQ(echo(*first, "1"), "1");
  EXPECT_EQ(echo(*second, "2"), "2");
  auto third = connect();  // accepted by the kernel, closed by the listener
  EXPECT_EQ(echo(*third, "3"), "");
  EXPECT_TRUE(log->contains("already 2 connections from 127.0.0.1"));
  EXPECT_EQ(listener->connectionCount(), 2u);
  close(third);
  close(first);
  EXPECT_TRUE(waitUntil([&] { return listener->connectionCount() == 1; }));
  auto fourth = connect();
  EXPECT_EQ(echo(*fourth, "4"), "4");
  close(fourth);
  close(second);
}

}  // namespace
}  // namespace switchboard::net
