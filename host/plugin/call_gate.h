// The gate every plugin call passes, so that a swap can quiesce a slot.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace switchboard::plugin {

// Calls enter shared; one swapper at a time closes the gate, waits until the
// calls in flight have left, does its work, and opens it again. Calls that
// arrive while closed wait (they are not refused).
//
// Why not std::shared_mutex: glibc's rwlock prefers readers by default, so a
// swap could wait forever behind threads calling in a tight loop. Here the
// close is one atomic OR that new calls see at once: the pause is bounded by
// the longest call in flight. One 32-bit word holds the closed flag (top bit)
// and the in-flight count; entering is one fetch_add, leaving one fetch_sub.
//
// Why a raw futex and not std::atomic::wait: libstdc++'s wait spins with
// sched_yield before sleeping, and on a loaded machine a yield hands the CPU
// to other processes for a whole time slice (milliseconds of pause, measured
// with bench/swap_pause). A futex sleeps at once and wakes on the exact event.
// The futex is only touched while the gate is closed.
//
// close()/open() must be called by one thread at a time (the manager's
// control thread); enter()/leave() from any thread.
class CallGate {
 public:
  void enter() {
    for (;;) {
      std::uint32_t seen = word_.fetch_add(1, std::memory_order_acquire);
      if ((seen & kClosed) == 0) return;
      // Closed: step back out, waking the swapper if we were the last one.
      leave();
      std::uint32_t now = word_.load(std::memory_order_acquire);
      while (now & kClosed) {
        wait(now);
        now = word_.load(std::memory_order_acquire);
      }
    }
  }

  void leave() {
    std::uint32_t after = word_.fetch_sub(1, std::memory_order_release) - 1;
    if (after == kClosed) wake();
  }

  // Returns once no call is in flight; new calls wait until open().
  // Spins first for a moment: calls are short, and a futex sleep
  // and wake costs tens of microseconds of pause on its own (measured).
  void close() {
    std::uint32_t now = word_.fetch_or(kClosed, std::memory_order_acq_rel) | kClosed;
    for (int spin = 0; now != kClosed && spin < kCloseSpins; ++spin) {
      relax();
      now = word_.load(std::memory_order_acquire);
    }
    while (now != kClosed) {
      wait(now);
      now = word_.load(std::memory_order_acquire);
    }
  }

  void open() {
    word_.fetch_and(~kClosed, std::memory_order_release);
    wake();
  }

 private:
  static constexpr std::uint32_t kClosed = std::uint32_t{1} << 31;
  // Short: on a machine with fewer free cores than callers, the call we wait
  // for may be preempted and need this very cpu (measured: a long spin made
  // the pause worse there).
  static constexpr int kCloseSpins = 64;

  static void relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Sleeps while the word still holds `expected` (the kernel checks that
  // atomically with going to sleep, so no wake can be missed).
  void wait(std::uint32_t expected) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word_), FUTEX_WAIT_PRIVATE, expected,
              nullptr, nullptr, 0);
  }
  void wake() {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word_), FUTEX_WAKE_PRIVATE, INT32_MAX,
              nullptr, nullptr, 0);
  }

  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  std::atomic<std::uint32_t> word_{0};
};

}  // namespace switchboard::plugin
