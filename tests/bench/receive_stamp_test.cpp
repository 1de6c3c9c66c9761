// Kernel receive timestamps (bench/receive_stamp.*) on real loopback TCP connections: a read's
// kernel stamp lies between the write that sent the bytes and the read that took them, and
// for a read that returns several writes it is no earlier than the last of them. Nothing is
// timed: only the order of clock reads is checked.

#include "receive_stamp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "loopback_pair.h"

namespace switchboard::bench {
namespace {

std::int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Blocks (no timeout: the bytes were written already) until `fd` holds at least `bytes`.
void awaitQueued(int fd, int bytes) {
  for (;;) {
    int queued = 0;
    ASSERT_EQ(::ioctl(fd, FIONREAD, &queued), 0);
    if (queued >= bytes) return;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 100);
  }
}

void writeAll(int fd, const std::string& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

TEST(ReceiveStampTest, ALoopbackReadIsStampedBetweenTheWriteAndTheRead) {
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  std::string message(100, 'm');
  std::int64_t beforeWrite = nowNs();
  writeAll(pair.server, message);
  awaitQueued(pair.client, static_cast<int>(message.size()));
  char buffer[256];
  ArrivalStamp stamp;
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), 0, stamp),
            static_cast<ssize_t>(message.size()));
  std::int64_t afterRead = nowNs();
  ASSERT_NE(stamp.kernelNs, 0) << "the kernel attached no receive timestamp";
  EXPECT_GE(stamp.kernelNs, beforeWrite);
  EXPECT_LE(stamp.kernelNs, stamp.readNs);
  EXPECT_LE(stamp.readNs, afterRead);
  EXPECT_EQ(stamp.arrivalNs(), stamp.kernelNs);
}

TEST(ReceiveStampTest, AReadOfSeveralWritesIsStampedNoEarlierThanTheLast) {
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  std::string first(100, 'a'), second(60, 'b');
  writeAll(pair.server, first);
  awaitQueued(pair.client, static_cast<int>(first.size()));
  // The first write is in the receiver's queue already: it arrived before this clock read.
  std::int64_t beforeSecond = nowNs();
  writeAll(pair.server, second);
  awaitQueued(pair.client, static_cast<int>(first.size() + second.size()));
  char buffer[512];
  ArrivalStamp stamp;
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), 0, stamp),
            static_cast<ssize_t>(first.size() + second.size()));
  ASSERT_NE(stamp.kernelNs, 0);
  // The stamp is the last byte's: every message of the read arrived no later than it.
  EXPECT_GE(stamp.kernelNs, beforeSecond);
  EXPECT_LE(stamp.kernelNs, stamp.readNs);
}

TEST(ReceiveStampTest, APeekIsStampedAndLeavesTheBytes) {
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  std::string message(40, 'p');
  std::int64_t beforeWrite = nowNs();
  writeAll(pair.server, message);
  awaitQueued(pair.client, static_cast<int>(message.size()));
  char buffer[128];
  ArrivalStamp peeked;
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), MSG_PEEK | MSG_DONTWAIT, peeked),
            static_cast<ssize_t>(message.size()));
  ASSERT_NE(peeked.kernelNs, 0);
  EXPECT_GE(peeked.kernelNs, beforeWrite);
  EXPECT_LE(peeked.kernelNs, peeked.readNs);
  ASSERT_EQ(::recv(pair.client, buffer, sizeof(buffer), 0), static_cast<ssize_t>(message.size()));
  EXPECT_EQ(std::string(buffer, message.size()), message);
}

TEST(ReceiveStampTest, TheTcpInqHintComesWithTheStamp) {
  ASSERT_TRUE(holdReceiveStampsOn()) << "the kernel never stamped a probe";
  LoopbackPair pair;
  int one = 1;
  ASSERT_EQ(::setsockopt(pair.client, SOL_TCP, TCP_INQ, &one, sizeof(one)), 0);
  ASSERT_TRUE(enableReceiveStamps(pair.client));
  std::string message(100, 'q');
  writeAll(pair.server, message);
  awaitQueued(pair.client, static_cast<int>(message.size()));
  char buffer[30];
  ArrivalStamp stamp;
  int left = -2;
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), 0, stamp, &left), 30);
  EXPECT_NE(stamp.kernelNs, 0);
  EXPECT_EQ(left, 70);
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), 0, stamp, &left), 30);
  EXPECT_EQ(left, 40);
}

TEST(ReceiveStampTest, WithoutStampsTheReadClockIsTheArrival) {
  LoopbackPair pair;  // SO_TIMESTAMPNS not enabled
  writeAll(pair.server, "plain");
  awaitQueued(pair.client, 5);
  char buffer[16];
  ArrivalStamp stamp;
  ASSERT_EQ(receiveStamped(pair.client, buffer, sizeof(buffer), 0, stamp), 5);
  EXPECT_EQ(stamp.kernelNs, 0);
  EXPECT_GT(stamp.readNs, 0);
  EXPECT_EQ(stamp.arrivalNs(), stamp.readNs);
}

TEST(ReceiveStampTest, WallClockTimesConvertByTheOffsetBetweenTheClocks) {
  // Wall clock 1,000 s ahead of the monotonic one, read between monotonic 500 and 700.
  timespec realNow{1000, 600};
  timespec stamp{1000, 100};
  EXPECT_EQ(realtimeToMonotonicNs(stamp, 500, realNow, 700), 100);
  timespec earlier{999, 999999600};
  EXPECT_EQ(realtimeToMonotonicNs(earlier, 500, realNow, 700), -400);
}

}  // namespace
}  // namespace switchboard::bench
