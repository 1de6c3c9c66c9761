// The gate every plugin call passes, so that a swap can quiesce a slot.
#pragma once

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
// the longest call in flight. One word holds the closed flag (top bit) and the
// in-flight count; entering is one fetch_add, leaving one fetch_sub, and the
// futex-backed wait/notify is only touched while the gate is closed.
//
// close()/open() must be called by one thread at a time (the manager's
// control thread); enter()/leave() from any thread.
class CallGate {
 public:
  void enter() {
    for (;;) {
      std::uint64_t seen = word_.fetch_add(1, std::memory_order_acquire);
      if ((seen & kClosed) == 0) return;
      // Closed: step back out, waking the swapper if we were the last one.
      leave();
      std::uint64_t now = word_.load(std::memory_order_acquire);
      while (now & kClosed) {
        word_.wait(now, std::memory_order_acquire);
        now = word_.load(std::memory_order_acquire);
      }
    }
  }

  void leave() {
    std::uint64_t after = word_.fetch_sub(1, std::memory_order_release) - 1;
    if (after == kClosed) word_.notify_all();
  }

  // Returns once no call is in flight; new calls wait until open().
  void close() {
    std::uint64_t now = word_.fetch_or(kClosed, std::memory_order_acq_rel) | kClosed;
    while (now != kClosed) {
      word_.wait(now, std::memory_order_acquire);
      now = word_.load(std::memory_order_acquire);
    }
  }

  void open() {
    word_.fetch_and(~kClosed, std::memory_order_release);
    word_.notify_all();
  }

 private:
  static constexpr std::uint64_t kClosed = std::uint64_t{1} << 63;
  std::atomic<std::uint64_t> word_{0};
};

}  // namespace switchboard::plugin
