// StampedStream (bench/): direct writes keep the byte order when the kernel takes only part,
// every write is stamped once just before it, and reads are stamped at the socket read.

#include "stamped_stream.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>

#include "loopback_pair.h"

#include "net/asio_stream.h"
#include "net/network_thread.h"
#include "server_process.h"

#include <gtest/gtest.h>
#include <kj/vector.h>
#include <sys/socket.h>
#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace switchboard::bench {
namespace {

std::string pattern(size_t size, size_t seed) {
  std::string text(size, '\0');
  for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return text;
}

// Resolves after the io_context has run its other ready handlers (socket readiness among
// them): lets the reading side take bytes out of the kernel between two writes.
kj::Promise<void> yieldToAsio(asio::io_context& io) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  asio::post(io, [fulfiller = kj::mv(paf.fulfiller)]() mutable { fulfiller->fulfill(); });
  return kj::mv(paf.promise);
}

class StampedStreamTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    thread.start();
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    int small = 16 * 1024;  // so large writes are only partly taken by the kernel
    ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    thread.runSync([&] {
      sender = std::make_unique<StampedStream>(
          thread.ioContext(), kj::heap<net::AsioStream>(thread.ioContext(), fds[0]), GetParam());
      receiver = std::make_unique<StampedStream>(
          thread.ioContext(), kj::heap<net::AsioStream>(thread.ioContext(), fds[1]), GetParam());
    });
  }
  void TearDown() override {
    thread.runSync([&] {
      sender = nullptr;
      receiver = nullptr;
    });
    thread.stop();
  }

  net::NetworkThread thread{"stamped-test"};
  std::unique_ptr<StampedStream> sender;    // loop thread only
  std::unique_ptr<StampedStream> receiver;  // loop thread only
};

TEST_P(StampedStreamTest, WritesOfAssortedSizesArriveInOrderEachStampedOnce) {
  // Small and large pieces alternate: a large one fills the kernel buffer, so later small
  // ones find bytes queued in AsioStream and must wait behind them, also when the reader has
  // meanwhile made room in the kernel (the loop runs between writes).
  std::vector<std::string> pieces;
  std::string expected;
  for (size_t i = 0; i < 60; ++i) {
    pieces.push_back(pattern(i % 3 == 0 ? 100000 + i : 40 + i, i));
    expected += pieces.back();
  }
  std::vector<std::int64_t> stamps;
  std::string received(expected.size(), '\0');
  std::int64_t before = monotonicNs();
  thread.runSync([&] {
    sender->beforeWrite = [&](std::int64_t ns) { stamps.push_back(ns); };
    auto reads = receiver->read(received.data(), received.size());
    kj::Promise<void> writes = kj::READY_NOW;
    for (size_t i = 0; i < pieces.size(); ++i) {
      writes = writes.then([&, i]() -> kj::Promise<void> {
        if (i % 2 == 0) return sender->write(pieces[i].data(), pieces[i].size());
        auto halves = kj::heapArray<kj::ArrayPtr<const kj::byte>>(2);
        auto bytes =
            kj::arrayPtr(reinterpret_cast<const kj::byte*>(pieces[i].data()), pieces[i].size());
        halves[0] = bytes.slice(0, 10);
        halves[1] = bytes.slice(10, bytes.size());
        return sender->write(halves.asPtr()).attach(kj::mv(halves));
      });
      writes = writes.then([&] { return yieldToAsio(thread.ioContext()); });
    }
    return kj::joinPromises(kj::arr(kj::mv(writes), kj::mv(reads)));
  });
  EXPECT_TRUE(received == expected);
  ASSERT_EQ(stamps.size(), pieces.size());
  EXPECT_GE(stamps.front(), before);
  for (size_t i = 1; i < stamps.size(); ++i) EXPECT_GE(stamps[i], stamps[i - 1]);
  EXPECT_GT(receiver->lastArrival().readNs, 0);
}

TEST_P(StampedStreamTest, ReadIsStampedAtTheSocketRead) {
  std::string message = pattern(64, 1);
  std::string received(message.size(), '\0');
  std::int64_t beforeWrite = monotonicNs();
  std::int64_t afterRead = 0;
  thread.runSync([&] {
    EXPECT_EQ(receiver->lastArrival().readNs, 0);
    auto read = receiver->read(received.data(), 8).then([&] {
      return receiver->read(received.data() + 8, message.size() - 8);
    });
    return sender->write(message.data(), message.size()).then([read = kj::mv(read)]() mutable {
      return kj::mv(read);
    });
  });
  afterRead = monotonicNs();
  EXPECT_TRUE(received == message);
  // Both reads came from one read() syscall: the stamp is that syscall's, in between.
  EXPECT_GE(receiver->lastArrival().readNs, beforeWrite);
  EXPECT_LE(receiver->lastArrival().readNs, afterRead);
}

// Over loopback TCP with receive timestamps on (as the phones' sockets have them): the
// stamps of the read are the kernel's, between the write and the read, and a message taken
// in two reads from one recvmsg() keeps them.
TEST(StampedStreamTcpTest, ReadCarriesTheKernelsReceiveStamp) {
  net::NetworkThread thread{"stamped-tcp"};
  thread.start();
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  ASSERT_GE(pair.client, 0);
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  int flags = ::fcntl(pair.client, F_GETFL);
  ASSERT_EQ(::fcntl(pair.client, F_SETFL, flags | O_NONBLOCK), 0);
  std::unique_ptr<StampedStream> receiver;
  int fd = pair.client;
  pair.client = -1;  // the stream owns it now
  thread.runSync([&] {
    receiver = std::make_unique<StampedStream>(
        thread.ioContext(), kj::heap<net::AsioStream>(thread.ioContext(), fd), true);
  });
  std::string message = pattern(200, 3);
  std::string received(message.size(), '\0');
  std::int64_t beforeWrite = monotonicNs();
  ArrivalStamp first, second;
  thread.runSync([&] {
    auto read = receiver->read(received.data(), 8).then([&] {
      first = receiver->lastArrival();
      return receiver->read(received.data() + 8, message.size() - 8);
    });
    EXPECT_EQ(::send(pair.server, message.data(), message.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(message.size()));
    return read;
  });
  second = receiver->lastArrival();
  std::int64_t afterRead = monotonicNs();
  EXPECT_TRUE(received == message);
  ASSERT_NE(first.kernelNs, 0) << "the kernel attached no receive timestamp";
  EXPECT_GE(first.kernelNs, beforeWrite);
  EXPECT_LE(first.kernelNs, first.readNs);
  EXPECT_LE(first.readNs, afterRead);
  EXPECT_EQ(second.kernelNs, first.kernelNs);
  EXPECT_EQ(second.readNs, first.readNs);
  thread.runSync([&] { receiver = nullptr; });
  thread.stop();
}

// With countCapnpMessages(), messageArrival() stays with the read that completed the last
// whole frame while the next frame's first bytes are read (as capnp's message loop reads
// them before it dispatches the call before), and moves on once that frame is whole. The
// first frame has two segments, so its segment table is padded.
TEST(StampedStreamTcpTest, MessageArrivalIsTheReadThatCompletedTheFrame) {
  net::NetworkThread thread{"stamped-frames"};
  thread.start();
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  ASSERT_GE(pair.client, 0);
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  int flags = ::fcntl(pair.client, F_GETFL);
  ASSERT_EQ(::fcntl(pair.client, F_SETFL, flags | O_NONBLOCK), 0);
  int fd = pair.client;
  pair.client = -1;  // the stream owns it now
  std::unique_ptr<StampedStream> receiver;
  thread.runSync([&] {
    receiver = std::make_unique<StampedStream>(
        thread.ioContext(), kj::heap<net::AsioStream>(thread.ioContext(), fd), true);
    receiver->countCapnpMessages();
  });
  auto frame = [](size_t textBytes) {
    capnp::MallocMessageBuilder builder(1, capnp::AllocationStrategy::FIXED_SIZE);
    builder.initRoot<capnp::AnyPointer>().setAs<capnp::Text>(std::string(textBytes, 't'));
    auto words = capnp::messageToFlatArray(builder);
    return std::string(reinterpret_cast<const char*>(words.begin()), words.asBytes().size());
  };
  std::string first = frame(40), second = frame(8);
  std::uint32_t segmentsLessOne = 0;
  std::memcpy(&segmentsLessOne, first.data(), 4);
  ASSERT_GE(segmentsLessOne, 1u) << "the first frame should have several segments";
  // Sends `bytes`, then reads `size` of them into `into` on the loop.
  auto sendAndRead = [&](const std::string& bytes, std::string& into, size_t size) {
    into.assign(size, '\0');
    thread.runSync([&] {
      auto read = receiver->read(into.data(), size);
      EXPECT_EQ(::send(pair.server, bytes.data(), bytes.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(bytes.size()));
      return read;
    });
  };
  std::string got;
  sendAndRead(first, got, first.size());
  EXPECT_TRUE(got == first);
  ArrivalStamp ofFirst = receiver->messageArrival();
  ASSERT_NE(ofFirst.kernelNs, 0) << "the kernel attached no receive timestamp";
  EXPECT_EQ(ofFirst.kernelNs, receiver->lastArrival().kernelNs);
  std::int64_t beforeSecond = monotonicNs();
  sendAndRead(second, got, 8);  // the next frame's segment table only
  EXPECT_GE(receiver->lastArrival().kernelNs, beforeSecond);
  EXPECT_EQ(receiver->messageArrival().kernelNs, ofFirst.kernelNs);
  EXPECT_EQ(receiver->messageArrival().readNs, ofFirst.readNs);
  std::string rest(second.size() - 8, '\0');
  thread.runSync([&] { return receiver->read(rest.data(), rest.size()); });
  EXPECT_TRUE(got + rest == second);
  EXPECT_EQ(receiver->messageArrival().kernelNs, receiver->lastArrival().kernelNs);
  EXPECT_GE(receiver->messageArrival().kernelNs, beforeSecond);
  thread.runSync([&] { receiver = nullptr; });
  thread.stop();
}

INSTANTIATE_TEST_SUITE_P(DirectAndBatched, StampedStreamTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "direct" : "batched"; });

}  // namespace
}  // namespace switchboard::bench
