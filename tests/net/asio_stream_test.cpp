// AsioStream over a socketpair, both ends on one NetworkThread; and over TCP (below).

#include "net/asio_stream.h"
#include "net/network_thread.h"

#include "wait_until.h"

#include <gtest/gtest.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <asio/post.hpp>

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

TEST_F(AsioStreamTest, WhatADrainWroteIsOnTheSocketBeforeTheNextAsioHandlerRuns) {
  // The flush runs at the end of the KJ drain that wrote, not in a handler posted behind the
  // ones already queued (each posted handler costs Asio an extra epoll_wait).
  ssize_t peeked = -2;
  thread.runSync([&] {
    int peer = KJ_ASSERT_NONNULL(right->getFd());
    // A handler of Asio's own, as a socket's readiness is (a function posted through
    // NetworkThread::post has its drain posted behind it instead).
    asio::post(thread.ioContext(), [&, peer] {
      // Queued now, before the drain that follows this handler.
      asio::post(thread.ioContext(), [&, peer] {
        char byte;
        peeked = ::recv(peer, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      });
      thread.addTask(kj::evalLater([&] { return left->write("x", 1); }));
    });
  });
  waitUntil([&] { return thread.runSync([&] { return peeked != -2; }); });
  EXPECT_EQ(peeked, 1) << "the write was still buffered when the next handler ran";
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

// A flushed write buffer of the usual size stays with the thread as a spare, and the next
// stream that writes takes it; a larger one is freed. Either way the stream holds none.
TEST_F(AsioStreamTest, AFlushedWriteBufferIsKeptAsASpareForTheNextWrite) {
  auto writeAndRead = [&](size_t size) {
    const std::string sent = pattern(size);
    std::string got(size, '\0');
    thread.runSync([&] {
      return left->write(sent.data(), sent.size()).then([&] {
        return right->read(got.data(), got.size());
      });
    });
    EXPECT_TRUE(got == sent);
    // The bytes arrived, so the flush ran.
    EXPECT_EQ(thread.runSync([&] { return left->bufferedWriteCapacity(); }), 0u);
    return thread.runSync([] { return AsioStream::spareWriteBuffers(); });
  };
  size_t spares = writeAndRead(100);
  ASSERT_GE(spares, 1u);
  size_t taken = thread.runSync([&] {
    kj::ArrayPtr<const kj::byte> byte = kj::arrayPtr(reinterpret_cast<const kj::byte*>("x"), 1);
    EXPECT_TRUE(right->tryWriteNow(kj::arrayPtr(&byte, 1)));
    EXPECT_EQ(right->bufferedWriteCapacity(), AsioStream::kInitialWriteBytes);
    return AsioStream::spareWriteBuffers();
  });
  EXPECT_EQ(taken, spares - 1);
  char x = 0;
  thread.runSync([&] { return left->read(&x, 1); });
  EXPECT_EQ(x, 'x');
  EXPECT_EQ(thread.runSync([] { return AsioStream::spareWriteBuffers(); }), spares);
  // Twice the usual size: allocated for the batch, freed after it, not kept.
  EXPECT_EQ(writeAndRead(2 * AsioStream::kInitialWriteBytes), spares);
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

// readAheadNow() reads what the socket has without waiting; the end of the stream it meets
// is reported by the next tryRead(), as if that read had met it.
TEST_F(AsioStreamTest, ReadAheadNowLeavesTheEndOfTheStreamToTheNextRead) {
  const std::string sent = pattern(100);
  int fd = thread.runSync([&] {
    return left->write(sent.data(), sent.size()).then([&] { return right->getFd().orDefault(-1); });
  });
  ASSERT_TRUE(waitUntil([fd] {
    int pending = 0;
    return ::ioctl(fd, FIONREAD, &pending) == 0 && pending >= 100;
  }));
  thread.runSync([&] { left = nullptr; });  // the peer closes
  std::string got(100, '\0');
  bool readAhead = thread.runSync([&] { return right->readAheadNow(); });
  EXPECT_TRUE(readAhead);
  EXPECT_EQ(thread.runSync([&] { return right->takeBuffered(got.data(), got.size()); }), 100u);
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(thread.runSync([&] { return right->readAheadNow(); }));  // the end, kept
  char more[8];
  EXPECT_EQ(thread.runSync([&] { return right->tryRead(more, 1, sizeof(more)); }), 0u);
}

// tryWriteNow() takes pieces only while the buffer stays below kHighWaterBytes with them, and
// none once the sending side is shut; what it took arrives whole and in order.
TEST_F(AsioStreamTest, TryWriteNowTakesOnlyWhatStaysBelowTheHighWaterMark) {
  const size_t piece = 64 * 1024;
  const std::string sent = pattern(4 * piece);
  size_t buffered = thread.runSync([&] {
    for (size_t i = 0; i < 4; ++i) {
      kj::ArrayPtr<const kj::byte> bytes =
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(sent.data()) + i * piece, piece);
      bool taken = left->tryWriteNow(kj::arrayPtr(&bytes, 1));
      EXPECT_EQ(taken, i < 3) << "piece " << i;  // the fourth would reach the mark
    }
    return left->bufferedWriteBytes();
  });
  EXPECT_EQ(buffered, 3 * piece);
  std::string received(3 * piece, '\0');
  thread.runSync([&] { return right->read(received.data(), received.size()); });
  EXPECT_TRUE(received == sent.substr(0, 3 * piece));
  bool afterShutdown = thread.runSync([&] {
    left->shutdownWrite();
    kj::ArrayPtr<const kj::byte> bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>("x"), 1);
    return left->tryWriteNow(kj::arrayPtr(&bytes, 1));
  });
  EXPECT_FALSE(afterShutdown);
}

// whenNothingToRead() waits only when nothing is buffered and the socket said it has nothing
// (EAGAIN); it resolves at the next edge, after which the bytes are there to read ahead.
TEST_F(AsioStreamTest, WhenNothingToReadWaitsOnlyForAnEmptySocket) {
  EXPECT_TRUE(thread.runSync([&] { return right->whenNothingToRead() == nullptr; }))
      << "a new stream has not asked the socket yet";
  EXPECT_FALSE(thread.runSync([&] { return right->readAheadNow(); }));  // EAGAIN
  const std::string sent = pattern(10);
  size_t got = thread.runSync([&] {
    auto waiting = KJ_ASSERT_NONNULL(right->whenNothingToRead());
    return left->write(sent.data(), sent.size())
        .then([&, waiting = kj::mv(waiting)]() mutable { return kj::mv(waiting); })
        .then([&] {
          EXPECT_TRUE(right->readAheadNow());
          EXPECT_TRUE(right->whenNothingToRead() == nullptr);  // bytes are buffered
          return right->bufferedReadBytes();
        });
  });
  EXPECT_EQ(got, sent.size());
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

// ------------------------------------------------------------------------- over TCP

// A connected TCP pair on 127.0.0.1: TCP is where AsioStream asks the kernel (TCP_INQ) whether
// a read emptied the socket, and waits for the next edge without a read that gets EAGAIN.
class AsioStreamTcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread.start();
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listener, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), length), 0);
    ASSERT_EQ(::listen(listener, 1), 0);
    ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
    peer = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(peer, reinterpret_cast<sockaddr*>(&address), length), 0);
    int served = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ::close(listener);
    ASSERT_GE(served, 0);
    thread.runSync([&] { stream = std::make_unique<AsioStream>(thread.ioContext(), served); });
  }
  void TearDown() override {
    thread.runSync([&] { stream = nullptr; });
    if (peer >= 0) ::close(peer);
    thread.stop();
  }

  // Reads until the end of the stream; the text read, or "failed: <type>".
  std::string readToEnd() {
    return thread.runSync([&] {
      return stream->readAllText().then(
          [](kj::String text) { return std::string(text.cStr()); },
          [](kj::Exception&& exception) {
            return std::string(exception.getType() == kj::Exception::Type::DISCONNECTED
                                   ? "failed: disconnected"
                                   : "failed: other");
          });
    });
  }

  // Waits until `bytes` bytes (and whatever came with them) sit in the served socket.
  void waitQueued(int bytes) {
    int fd = thread.runSync([&] { return stream->getFd().orDefault(-1); });
    ASSERT_TRUE(waitUntil([fd, bytes] {
      int pending = 0;
      return ::ioctl(fd, FIONREAD, &pending) == 0 && pending >= bytes;
    }));
  }

  NetworkThread thread{"stream-tcp-test"};
  std::unique_ptr<AsioStream> stream;  // loop thread only
  int peer = -1;                       // the client end, blocking, used from the test thread
};

TEST_F(AsioStreamTcpTest, AnEndOfStreamThatCameWithTheLastDataIsSeen) {
  // Data and FIN both queued before the first read: the read that takes the data empties the
  // socket, and no further readiness edge will come for the FIN.
  ASSERT_EQ(::send(peer, "goodbye", 7, MSG_NOSIGNAL), 7);
  ASSERT_EQ(::shutdown(peer, SHUT_WR), 0);
  waitQueued(7);
  EXPECT_EQ(readToEnd(), "goodbye");
}

TEST_F(AsioStreamTcpTest, AResetThatCameWithTheLastDataIsSeen) {
  ASSERT_EQ(::send(peer, "abrupt", 6, MSG_NOSIGNAL), 6);
  waitQueued(6);
  // Unread data on the peer's side is not needed for a reset: SO_LINGER 0 sends one.
  linger abort{1, 0};
  ASSERT_EQ(::setsockopt(peer, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort)), 0);
  ::close(peer);
  peer = -1;
  // The reset discards what was queued, or arrives behind it: either way the read fails
  // (after the bytes, if they were kept) and does not wait forever.
  std::string seen = readToEnd();
  EXPECT_TRUE(seen == "failed: disconnected" || seen == "abrupt") << seen;
}

TEST_F(AsioStreamTcpTest, MessagesArrivingOneByOneAreEachRead) {
  // Each message empties the socket; the next must come from a readiness edge.
  for (int i = 0; i < 20; ++i) {
    std::string message = "message " + std::to_string(i);
    ASSERT_EQ(::send(peer, message.data(), message.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(message.size()));
    std::string received(message.size(), '\0');
    thread.runSync([&] { return stream->read(received.data(), received.size()); });
    EXPECT_EQ(received, message);
  }
}

}  // namespace
}  // namespace switchboard::net
