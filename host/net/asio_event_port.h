#pragma once
// The one place where KJ's event loop meets Asio's: a kj::EventPort driven by an
// asio::io_context. See DESIGN.md, "The event loop: KJ over Asio".

#include <kj/async.h>
#include <atomic>
#include <vector>

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
// - run() runs the io_context (instead of io_context::run()) and drains the KJ loop right after
//   the Asio handler that made it runnable, before the next handler and without a posted one.
//   Outside run() (a sync wait, or a caller running the io_context itself), and inside a
//   PostedWork scope, a loop that becomes runnable gets one posted "drain" handler instead:
//   functions posted from other threads (a store's completions) come in bursts, and one drain
//   behind the whole burst sends what they produced together, where a drain after each would
//   send it piecemeal. Either way a drain runs at most
//   kMaxTurnsPerDrain KJ turns and, if the loop is still runnable, posts the next drain, so
//   socket readiness handlers interleave with KJ work and neither starves the other. Why run():
//   a posted handler makes Asio's scheduler poll epoll once more (epoll_wait with a zero
//   timeout) before running it, two system calls per wake-up for nothing (drain, then flush).
// - deferToDrainEnd(): work that must follow the KJ turns of the current drain (a stream's
//   flush: the messages of every call a drain produced leave in one send()) runs at the end of
//   the drain, before the thread goes back to Asio.
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

  // Work queued to run at the end of a drain (deferToDrainEnd). Lives on the port's thread;
  // destroying it while queued takes it out of the queue.
  class DrainEndTask {
   public:
    DrainEndTask() = default;
    DrainEndTask(const DrainEndTask&) = delete;
    DrainEndTask& operator=(const DrainEndTask&) = delete;
    virtual void atDrainEnd() = 0;

   protected:
    ~DrainEndTask();

   private:
    friend class AsioEventPort;
    AsioEventPort* queuedIn_ = nullptr;
  };

  explicit AsioEventPort(asio::io_context& io);
  ~AsioEventPort() noexcept(false);
  AsioEventPort(const AsioEventPort&) = delete;
  AsioEventPort& operator=(const AsioEventPort&) = delete;

  void attach(kj::EventLoop& loop, kj::WaitScope& waitScope);
  void detach();

  // Re-post the drain if the loop still has work: call after any Promise::wait() returns.
  void resumeAfterSyncWait();

  // Runs the io_context until it is stopped or out of work, draining the KJ loop after each
  // handler that made it runnable (see the contract above). Returns as io_context::run() does;
  // an exception from a handler leaves it, and calling run() again goes on where it stopped.
  void run();

  // While alive, on the port's thread: KJ work made runnable is drained by a posted drain, not
  // right after the current handler (see the contract above). For the wrapper of functions
  // posted to the thread from elsewhere (NetworkThread::post). Nothing happens on a thread
  // without a port.
  class PostedWork {
   public:
    PostedWork();
    ~PostedWork();
    PostedWork(const PostedWork&) = delete;
    PostedWork& operator=(const PostedWork&) = delete;

   private:
    AsioEventPort* port_;
    bool was_ = false;
  };

  // Inside a drain on this thread: `task` runs once at the end of that drain, after its KJ
  // turns (queued once however often deferred). Elsewhere nothing is queued and it returns
  // false: the caller schedules the work itself.
  static bool deferToDrainEnd(DrainEndTask& task);

  bool wait() override;
  bool poll() override;
  void setRunnable(bool runnable) override;
  void wake() const override;

 private:
  void postDrain();
  void drain();
  void runDrainEndTasks();

  asio::io_context& io_;
  kj::EventLoop* loop_ = nullptr;       // not owned; set by attach()
  kj::WaitScope* waitScope_ = nullptr;  // not owned; set by attach()
  bool drainPosted_ = false;
  bool draining_ = false;
  bool running_ = false;       // inside run(): drains follow handlers, unposted
  bool drainWanted_ = false;   // inside run(): the loop became runnable in this handler
  bool inPostedWork_ = false;  // a PostedWork scope is open
  std::vector<DrainEndTask*> drainEnd_;
  int syncWaitDepth_ = 0;
  mutable std::atomic<bool> woken_{false};
};

}  // namespace switchboard::net
