// Kernel receive timestamps on the generators' sockets: when the server's bytes reached this
// host's receive path, apart from when the generator's loop got round to reading them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ctime>

namespace switchboard::bench {

// When the bytes one read returned arrived, on CLOCK_MONOTONIC (the clock of every other
// stamp in sbbench).
//
// kernelNs: the kernel's receive timestamp (SO_TIMESTAMPNS) of what the read returned,
// converted from CLOCK_REALTIME. On TCP (Linux >= 5.8, tcp_recvmsg) it is the timestamp of
// the segment (skb) holding the last byte the read returned; segments merged in the receive
// queue keep the newest one's stamp. So every byte the read returned arrived no later than
// kernelNs: for each message completed by that read, kernelNs is an upper bound of its
// arrival (exact for the last one, later by the spread of the segments for the others). On
// loopback the stamp is taken when the sender's send() queues the segment on the loopback
// device (net.core.netdev_tstamp_prequeue=1, the default), before the receiving softirq.
// 0 when the kernel attached none: not enabled, a Unix socket, a clock step (see below), or
// a segment that came just after the machine's first socket asked for stamps (Linux turns
// stamping on for all through deferred work; the generators' sockets ask at connect, long
// before the load).
//
// readNs: the clock read just after the syscall returned (what sbbench stamped before).
// readNs - kernelNs is the generator's receive lag: how long the bytes waited in the
// socket for the generator's loop.
struct ArrivalStamp {
  std::int64_t kernelNs = 0;
  std::int64_t readNs = 0;
  // The arrival to count: the kernel's stamp, or the read when there is none.
  std::int64_t arrivalNs() const { return kernelNs != 0 ? kernelNs : readNs; }
};

// Asks the kernel to stamp what `fd` receives (SO_TIMESTAMPNS). False (errno set) if refused.
bool enableReceiveStamps(int fd);

// recvmsg(fd, buffer, size, flags) that also fills `stamp` when it returned bytes (flags may
// hold MSG_PEEK, MSG_DONTWAIT). `inqLeft`, if given, is set to the TCP_INQ hint (bytes left
// in the socket after this read; the socket must have TCP_INQ on) or to -1 when the kernel
// gave no hint. Returns what recvmsg returned.
ssize_t receiveStamped(int fd, void* buffer, std::size_t size, int flags, ArrivalStamp& stamp,
                       int* inqLeft = nullptr);

// A CLOCK_REALTIME time as CLOCK_MONOTONIC ns, given `monotonicNs` read just before
// `realtimeNow` and `monotonicAfterNs` just after it. The two clocks advance together (NTP
// adjusts the rate of both), so the offset between them changes only when the wall clock
// is stepped; the error is at most half the gap between the two monotonic reads (tens of
// ns). A step between the stamp and the read makes the result wrong by the step: the caller
// treats a result after the read, or not positive, as no stamp.
std::int64_t realtimeToMonotonicNs(const timespec& stamp, std::int64_t monotonicNs,
                                   const timespec& realtimeNow, std::int64_t monotonicAfterNs);

}  // namespace switchboard::bench
