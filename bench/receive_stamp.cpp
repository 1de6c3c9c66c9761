#include "receive_stamp.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstring>

namespace switchboard::bench {

namespace {

constexpr std::int64_t kSecond = 1000000000;

std::int64_t nsOf(const timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

std::int64_t clockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return nsOf(ts);
}

}  // namespace

bool enableReceiveStamps(int fd) {
  int one = 1;
  return ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == 0;
}

std::int64_t realtimeToMonotonicNs(const timespec& stamp, std::int64_t monotonicNs,
                                   const timespec& realtimeNow, std::int64_t monotonicAfterNs) {
  // realtime - monotonic at the moment the wall clock was read: the middle of the two reads.
  std::int64_t offset = nsOf(realtimeNow) - (monotonicNs + (monotonicAfterNs - monotonicNs) / 2);
  return nsOf(stamp) - offset;
}

ssize_t receiveStamped(int fd, void* buffer, std::size_t size, int flags, ArrivalStamp& stamp,
                       int* inqLeft) {
  iovec data{buffer, size};
  // Room for both: the timestamp comes first, then TCP_INQ's hint.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec)) + CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(fd, &message, flags);
  if (inqLeft != nullptr) *inqLeft = -1;
  if (n <= 0) return n;
  std::int64_t readNs = clockNs(CLOCK_MONOTONIC);
  stamp.readNs = readNs;
  stamp.kernelNs = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
        c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
      timespec kernel{};
      std::memcpy(&kernel, CMSG_DATA(c), sizeof(kernel));
      timespec realNow{};
      clock_gettime(CLOCK_REALTIME, &realNow);
      std::int64_t after = clockNs(CLOCK_MONOTONIC);
      std::int64_t converted = realtimeToMonotonicNs(kernel, readNs, realNow, after);
      // After the read, or not positive: the wall clock was stepped in between (no stamp).
      if (converted > 0 && converted <= readNs) stamp.kernelNs = converted;
    } else if (inqLeft != nullptr && c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ &&
               c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      std::memcpy(inqLeft, CMSG_DATA(c), sizeof(int));
    }
  }
  return n;
}

}  // namespace switchboard::bench
