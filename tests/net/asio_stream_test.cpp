// AsioStream over a socketpair, both ends on one NetworkThread.

#include "net/asio_stream.h"
#include "net/network_thread.h"

#include "wait_until.h"

#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <memory>
#include <string>

namespace switchboard::net {
namespace {

using testing::waitUntil;

std::string pattern(size_t size) {
  std::string text(size, '\0');
  for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return text;
}

class AsioStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread.start();
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    thread.runSync([&] {
      left = std::make_unique<AsioStream>(thread.ioContext(), fds[0]);
      right = std::make_unique<AsioStream>(thread.ioContext(), fds[1]);
    });
  }
  void TearDown() override {
    thread.runSync([&] {
      left = nullptr;
      right = nullptr;
    });
    thread.stop();
  }

  NetworkThread thread{"stream-test"};
  std::unique_ptr<AsioStream> left;   // loop thread only
  std::unique_ptr<AsioStream> right;  // loop thread only
};

TEST_F(AsioStreamTest, LargeWriteArrivesIntactThroughExactReads) {
  const std::string sent = pattern(3 * 1024 * 1024 + 17);
  std::string received(sent.size(), '\0');
  thread.runSync([&] {
    // Exact-size reads of assorted sizes, as Cap'n Proto does, racing a back-pressured write.
    auto reads = kj::evalNow([&]() -> kj::Promise<void> {
      kj::Promise<void> chain = kj::READY_NOW;
      size_t offset = 0;
      size_t step = 8;
      while (offset < received.size()) {
        size_t size = std::min(step, received.size() - offset);
        chain =
            chain.then([&, offset, size] { return right->read(received.data() + offset, size); });
        offset += size;
        step = step == 8 ? 100000 : 8;
      }
      return chain;
    });
    auto write = left->write(sent.data(), sent.size());
    return kj::joinPromises(kj::arr(kj::mv(write), kj::mv(reads)));
  });
  EXPECT_TRUE(received == sent);
}

TEST_F(AsioStreamTest, ManySmallWritesAreBatchedAndOrdered) {
  std::string expected;
  for (int i = 0; i < 2000; ++i) expected += std::to_string(i) + ",";
  std::string received(expected.size(), '\0');
  thread.runSync([&] {
    auto writes = kj::heapArrayBuilder<kj::Promise<void>>(2001);
    for (int i = 0; i < 2000; ++i) {
      // The piece dies at the end of the iteration: write() must have copied it.
      std::string piece = std::to_string(i) + ",";
      auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(piece.data()), piece.size());
      kj::ArrayPtr<const kj::byte> pieces[] = {bytes};
      writes.add(left->write(kj::arrayPtr(pieces, 1)));
    }
    writes.add(right->read(received.data(), received.size()));
    return kj::joinPromises(writes.finish());
  });
  EXPECT_EQ(received, expected);
}

TEST_F(AsioStreamTest, PeerCloseGivesEofOnReadAndDisconnectOnWrite) {
  size_t got = thread.runSync([&] {
    left = nullptr;  // closes the socket
    auto buffer = kj::heapArray<kj::byte>(16);
    auto read = right->tryRead(buffer.begin(), 1, buffer.size());
    return read.attach(kj::mv(buffer));
  });
  EXPECT_EQ(got, 0u);

  thread.runSync([&] {
    std::string data(1000, 'x');
    auto write = right->write(data.data(), data.size()).attach(kj::mv(data));
    return write.then([&] { return right->whenWriteDisconnected(); });
  });
  std::string failure = thread.runSync([&] {
    std::string data(10, 'y');
    return right->write(data.data(), data.size())
        .then([]() -> std::string { return "write succeeded"; },
              [](kj::Exception&& exception) -> std::string {
                return exception.getType() == kj::Exception::Type::DISCONNECTED
                           ? "disconnected"
                           : exception.getDescription().cStr();
              });
  });
  EXPECT_EQ(failure, "disconnected");
}

TEST_F(AsioStreamTest, DroppedReadLeavesNoWriterBehindAndNextReadGetsTheData) {
  thread.runSync([&] {
    auto buffer = kj::heapArray<kj::byte>(64);
    auto read = right->tryRead(buffer.begin(), 1, buffer.size());
    // Drop the read and free its buffer before any byte arrives.
  });
  std::string received(5, '\0');
  thread.runSync([&] {
    return left->write("hello", 5).then([&] { return right->read(received.data(), 5); });
  });
  EXPECT_EQ(received, "hello");
}

TEST_F(AsioStreamTest, HoldsNoBufferOnceAMessageIsConsumedOrFlushed) {
  EXPECT_EQ(thread.runSync([&] { return right->bufferedReadCapacity(); }), 0u);
  // Header then body, as Cap'n Proto reads a message.
  const std::string sent = pattern(108);
  std::string header(8, '\0');
  std::string body(100, '\0');
  thread.runSync([&] {
    return left->write(sent.data(), sent.size())
        .then([&] { return right->read(header.data(), header.size()); })
        .then([&] { return right->read(body.data(), body.size()); });
  });
  EXPECT_EQ(header + body, sent);
  thread.runSync([&] {
    EXPECT_EQ(right->bufferedReadBytes(), 0u);
    EXPECT_EQ(right->bufferedReadCapacity(), 0u);
    // The bytes arrived, so the flush ran.
    EXPECT_EQ(left->bufferedWriteBytes(), 0u);
    EXPECT_EQ(left->bufferedWriteCapacity(), 0u);
  });
}

TEST_F(AsioStreamTest, KeepsTheRestOfABatchedReadBufferedUntilTaken) {
  const std::string sent = pattern(200);
  int fd = thread.runSync([&] {
    return left->write(sent.data(), sent.size()).then([&] { return right->getFd().orDefault(-1); });
  });
  // Wait until all 200 bytes sit in the socket, so the first read() takes them in one go.
  ASSERT_TRUE(waitUntil([fd] {
    int pending = 0;
    return ::ioctl(fd, FIONREAD, &pending) == 0 && pending >= 200;
  }));
  std::string head(8, '\0');
  size_t kept = thread.runSync([&] {
    return right->read(head.data(), head.size()).then([&] { return right->bufferedReadBytes(); });
  });
  EXPECT_EQ(kept, 192u);
  // Only what was read ahead is held, not a whole read buffer.
  EXPECT_EQ(thread.runSync([&] { return right->bufferedReadCapacity(); }), 192u);
  std::string tail(192, '\0');
  thread.runSync([&] { return right->read(tail.data(), tail.size()); });
  EXPECT_EQ(head + tail, sent);
  EXPECT_EQ(thread.runSync([&] { return right->bufferedReadCapacity(); }), 0u);
}

TEST_F(AsioStreamTest, ForwardsSocketQueries) {
  thread.runSync([&] {
    int sendBuffer = 0;
    kj::uint length = sizeof(sendBuffer);
    left->getsockopt(SOL_SOCKET, SO_SNDBUF, &sendBuffer, &length);
    EXPECT_GT(sendBuffer, 0);
    EXPECT_EQ(length, sizeof(sendBuffer));
    EXPECT_NE(left->getFd(), nullptr);
  });
}

TEST_F(AsioStreamTest, ShutdownWriteFlushesFirst) {
  std::string received = thread.runSync([&] {
    // Shut down right after write() resolved: the bytes are still only in our buffer.
    return left->write("last words", 10).then([&] {
      left->shutdownWrite();
      return right->readAllText().then([](kj::String text) { return std::string(text.cStr()); });
    });
  });
  EXPECT_EQ(received, "last words");
}

}  // namespace
}  // namespace switchboard::net
