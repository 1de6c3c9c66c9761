#include "deadline_epoll.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace switchboard::bench {

DeadlineEpoll::DeadlineEpoll()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      timer_(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) {
  if (epoll_ < 0 || timer_ < 0) {
    throw std::runtime_error(std::string("epoll/timerfd: ") + strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = this;  // marks the timer's events
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, timer_, &ev);
}

DeadlineEpoll::~DeadlineEpoll() {
  ::close(timer_);
  ::close(epoll_);
}

void DeadlineEpoll::add(int fd, std::uint32_t events, void* data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = data;
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
}

void DeadlineEpoll::modify(int fd, std::uint32_t events, void* data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = data;
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev);
}

void DeadlineEpoll::remove(int fd) {
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
}

int DeadlineEpoll::wait(epoll_event* events, int capacity, std::int64_t deadlineNs) {
  if (deadlineNs != armedNs_) {
    itimerspec when{};
    // A zero it_value would disarm the timer: a deadline at or before the epoch is "now".
    std::int64_t at = deadlineNs > 0 ? deadlineNs : 1;
    when.it_value.tv_sec = static_cast<time_t>(at / 1000000000);
    when.it_value.tv_nsec = static_cast<long>(at % 1000000000);
    ::timerfd_settime(timer_, TFD_TIMER_ABSTIME, &when, nullptr);
    armedNs_ = deadlineNs;
  }
  int n = ::epoll_wait(epoll_, events, capacity, -1);
  if (n < 0) return 0;  // EINTR: the caller loops and re-checks its clock
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.ptr == this) {
      std::uint64_t expirations;
      (void)!::read(timer_, &expirations, sizeof(expirations));
      armedNs_ = -1;  // spent: the next wait arms it again, even for the same deadline
      continue;
    }
    events[kept++] = events[i];
  }
  return kept;
}

}  // namespace switchboard::bench
