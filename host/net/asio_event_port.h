#pragma once
// The one place where KJ's event loop meets Asio's: a kj::EventPort driven by an
// asio::io_context. See DESIGN.md, "The event loop: KJ over Asio".

#include <kj/async.h>
#include <atomic>

namespace asio {
class io_context;
}

namespace switchboard::net {

// Runs a kj::EventLoop from inside an asio::io_context, on the io_context's thread.
//
// Contract:
// - Construct the port, then the kj::EventLoop over it, then the kj::WaitScope, then call
//   attach(loop, waitScope). All four live on one thread and the port outlives the other two;
//   the io_context must outlive the port.
// - When the loop becomes runnable the port asio::posts one "drain" handler; a drain runs at
//   most kMaxTurnsPerDrain KJ turns and re-posts itself while the loop is still runnable, so
//   socket readiness handlers interleave with KJ work and neither starves the other.
// - wake() is the only method other threads may call (kj::Executor and cross-thread
//   fulfillers call it with a KJ lock held): it never blocks, it only posts. The posted drain
//   then polls the WaitScope, which is the only way KJ 0.9.2 delivers cross-thread events.
// - wait()/poll() serve synchronous Promise::wait() on this thread (start-up, shutdown,
//   tests), never inside an Asio handler. wait() runs the io_context one handler at a time.
//   KJ 0.9.2 does not re-signal setRunnable after a sync wait, so the caller of a sync wait
//   must call resumeAfterSyncWait() when it returns.
class AsioEventPort final : public kj::EventPort {
 public:
  static constexpr unsigned kMaxTurnsPerDrain = 4096;

  explicit AsioEventPort(asio::io_context& io);
  ~AsioEventPort() noexcept(false);
  AsioEventPort(const AsioEventPort&) = delete;
  AsioEventPort& operator=(const AsioEventPort&) = delete;

  void attach(kj::EventLoop& loop, kj::WaitScope& waitScope);
  void detach();

  // Re-post the drain if the loop still has work: call after any Promise::wait() returns.
  void resumeAfterSyncWait();

  bool wait() override;
  bool poll() override;
  void setRunnable(bool runnable) override;
  void wake() const override;

 private:
  void postDrain();
  void drain();

  asio::io_context& io_;
  kj::EventLoop* loop_ = nullptr;       // not owned; set by attach()
  kj::WaitScope* waitScope_ = nullptr;  // not owned; set by attach()
  bool drainPosted_ = false;
  bool draining_ = false;
  int syncWaitDepth_ = 0;
  mutable std::atomic<bool> woken_{false};
};

}  // namespace switchboard::net
