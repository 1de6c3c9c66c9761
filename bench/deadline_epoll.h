// The peers' event wait in sbbench: an epoll set whose wait ends at a nanosecond deadline.
#pragma once

#include <sys/epoll.h>

#include <cstdint>

namespace switchboard::bench {

// An epoll instance plus a timerfd in it, so a wait returns when a descriptor is ready or
// at an absolute CLOCK_MONOTONIC deadline, whichever comes first, to the timer's precision
// rather than epoll_wait's millisecond. The timerfd is re-armed only when the deadline
// changes. For the wake-up to come on time the calling thread's timer slack should be small
// (prctl PR_SET_TIMERSLACK; the peer loop sets 1 ns).
//
// Owns both descriptors. Single-threaded.
class DeadlineEpoll {
 public:
  DeadlineEpoll();
  ~DeadlineEpoll();
  DeadlineEpoll(const DeadlineEpoll&) = delete;
  DeadlineEpoll& operator=(const DeadlineEpoll&) = delete;

  // epoll_ctl on the set; `data` comes back in the events of wait().
  void add(int fd, std::uint32_t events, void* data);
  // Changes the events watched for `fd` (added before).
  void modify(int fd, std::uint32_t events, void* data);
  void remove(int fd);

  // Waits until something in the set is ready or `deadlineNs` passes; fills `events` with
  // the ready descriptors (never the timer) and returns how many (0: the deadline passed).
  int wait(epoll_event* events, int capacity, std::int64_t deadlineNs);

 private:
  int epoll_;
  int timer_;
  std::int64_t armedNs_ = -1;
};

}  // namespace switchboard::bench
