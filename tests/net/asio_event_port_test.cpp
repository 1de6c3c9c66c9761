// The event port on its own, without NetworkThread: drains, cross-thread wake-ups, and the
// synchronous wait path.

#include "net/asio_event_port.h"
#include "net/fd_readiness.h"

#include <kj/vector.h>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace switchboard::net {
namespace {

// An io_context and a KJ loop over its port, attached for the test.
class AsioEventPortTest : public ::testing::Test {
 protected:
  // The KJ members' destructors may throw; a test's may not.
  ~AsioEventPortTest() noexcept override {}
  void SetUp() override { port.attach(loop, waitScope); }
  void TearDown() override { port.detach(); }

  asio::io_context io;
  AsioEventPort port{io};
  kj::EventLoop loop{port};
  kj::WaitScope waitScope{loop};
};

TEST_F(AsioEventPortTest, DrainsKjWorkFromInsideIoContextRun) {
  // A chain of separate turns far longer than one drain's turn budget.
  constexpr int kSteps = 3 * static_cast<int>(AsioEventPort::kMaxTurnsPerDrain);
  int steps = 0;
  std::function<kj::Promise<void>(int)> step = [&](int left) -> kj::Promise<void> {
    if (left == 0) return kj::READY_NOW;
    return kj::evalLater([&, left] {
      ++steps;
      return step(left - 1);
    });
  };
  bool finished = false;
  auto done = step(kSteps)
                  .then([&] {
                    finished = true;
                    io.stop();
                  })
                  .eagerlyEvaluate(nullptr);
  // Queued behind the first drain: it must run before the chain is done, because a drain
  // yields to the io_context after its budget instead of running the loop dry.
  int stepsWhenIoRan = -1;
  asio::post(io, [&] { stepsWhenIoRan = steps; });
  io.run();
  EXPECT_TRUE(finished);
  EXPECT_EQ(steps, kSteps);
  EXPECT_GT(stepsWhenIoRan, 0);
  EXPECT_LT(stepsWhenIoRan, kSteps);
}

TEST_F(AsioEventPortTest, RunDrainsRightAfterTheHandlerThatMadeTheLoopRunnable) {
  // Not in a posted handler behind the ones already queued: a posted drain costs Asio a
  // zero-timeout epoll_wait before it runs.

  std::vector<std::string> order;
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto continued = paf.promise.then([&] { order.push_back("kj"); }).eagerlyEvaluate(nullptr);
  asio::post(io, [&] {
    asio::post(io, [&] {
      order.push_back("next handler");
      io.stop();
    });
    paf.fulfiller->fulfill();
  });
  port.run();
  EXPECT_EQ(order, (std::vector<std::string>{"kj", "next handler"}));
}

TEST_F(AsioEventPortTest, WorkFromABurstOfPostedFunctionsIsDrainedOnceBehindThemAll) {
  // Posted from elsewhere (NetworkThread::post wraps them in PostedWork): what they make
  // runnable waits for one drain behind the burst, so its replies leave together.
  std::vector<std::string> order;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> fulfillers;
  kj::Vector<kj::Promise<void>> continued;
  for (int i = 0; i < 3; ++i) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    fulfillers.push_back(kj::mv(paf.fulfiller));
    continued.add(paf.promise.then([&order, i] { order.push_back("kj " + std::to_string(i)); })
                      .eagerlyEvaluate(nullptr));
  }
  for (int i = 0; i < 3; ++i) {
    asio::post(io, [&, i] {
      AsioEventPort::PostedWork posted;
      order.push_back("posted " + std::to_string(i));
      fulfillers[static_cast<std::size_t>(i)]->fulfill();
    });
  }
  asio::post(io, [&] { order.push_back("next handler"); });
  auto stop = kj::joinPromises(continued.releaseAsArray())
                  .then([&] { io.stop(); })
                  .eagerlyEvaluate(nullptr);
  port.run();
  EXPECT_EQ(order, (std::vector<std::string>{"posted 0", "posted 1", "posted 2", "next handler",
                                             "kj 0", "kj 1", "kj 2"}));
}

TEST_F(AsioEventPortTest, ADrainEndTaskRunsAfterTheDrainsTurnsAndNotOutsideADrain) {
  struct Recorder final : AsioEventPort::DrainEndTask {
    explicit Recorder(std::vector<std::string>& order) : order(order) {}
    void atDrainEnd() override { order.push_back("end"); }
    std::vector<std::string>& order;
  };
  std::vector<std::string> order;
  Recorder task(order);
  EXPECT_FALSE(AsioEventPort::deferToDrainEnd(task)) << "no drain is running";
  auto turns = kj::evalLater([&] {
                 EXPECT_TRUE(AsioEventPort::deferToDrainEnd(task));
                 EXPECT_TRUE(AsioEventPort::deferToDrainEnd(task));  // queued once
               })
                   .then([&] { order.push_back("later turn"); })
                   .then([&] { io.stop(); })
                   .eagerlyEvaluate(nullptr);
  port.run();
  EXPECT_EQ(order, (std::vector<std::string>{"later turn", "end"}));

  // A task destroyed while queued is not run.
  order.clear();
  auto doomed = std::make_unique<Recorder>(order);
  auto more = kj::evalLater([&] {
                EXPECT_TRUE(AsioEventPort::deferToDrainEnd(*doomed));
                doomed.reset();
              }).then([&] {
                  io.stop();
                }).eagerlyEvaluate(nullptr);
  io.restart();
  port.run();
  EXPECT_TRUE(order.empty());
}

TEST_F(AsioEventPortTest, WakeFromAnotherThreadDeliversCrossThreadFulfilment) {
  auto work = asio::make_work_guard(io);

  auto paf = kj::newPromiseAndCrossThreadFulfiller<int>();
  int result = 0;
  auto done = paf.promise
                  .then([&](int value) {
                    result = value;
                    io.stop();
                  })
                  .eagerlyEvaluate(nullptr);
  std::thread other([&fulfiller = paf.fulfiller] { fulfiller->fulfill(42); });
  io.run();
  other.join();
  EXPECT_EQ(result, 42);
}

TEST_F(AsioEventPortTest, UnderRunAHandlersWorkAfterACrossThreadWakeIsStillDrained) {
  // A wake is drained by WaitScope::poll(), after which KJ 0.9.2 still believes the port knows
  // the loop is runnable; the drain must leave KJ's view in step, or the next event that a
  // handler arms is never signalled to run().
  auto work = asio::make_work_guard(io);

  auto crossThread = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto local = kj::newPromiseAndFulfiller<void>();
  bool localSeen = false;
  auto first = crossThread.promise
                   .then([&] {
                     // The wake's work is done; a later handler fulfils the local promise.
                     asio::post(io, [&] { local.fulfiller->fulfill(); });
                   })
                   .eagerlyEvaluate(nullptr);
  auto second = local.promise
                    .then([&] {
                      localSeen = true;
                      io.stop();
                    })
                    .eagerlyEvaluate(nullptr);
  std::thread other([&fulfiller = crossThread.fulfiller] { fulfiller->fulfill(); });
  // Bounded: were the local event never drained, run() would block for good.
  asio::steady_timer guard(io, std::chrono::seconds(10));
  guard.async_wait([&](const asio::error_code&) { io.stop(); });
  port.run();
  other.join();
  EXPECT_TRUE(localSeen);
}

TEST_F(AsioEventPortTest, SyncWaitRunsIoHandlersAndResumesDrainingAfterwards) {
  auto work = asio::make_work_guard(io);

  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  asio::posix::stream_descriptor reader(io, fds[0]);
  std::thread writer([fd = fds[1]] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(::write(fd, "x", 1), 1);
  });
  // Sync wait: readiness arrives through an Asio handler run by AsioEventPort::wait().
  whenReadable(reader).wait(waitScope);
  writer.join();

  // Cross-thread fulfilment during a sync wait: wait() sees the wake.
  auto paf = kj::newPromiseAndCrossThreadFulfiller<int>();
  std::thread other([&fulfiller = paf.fulfiller] { fulfiller->fulfill(7); });
  EXPECT_EQ(paf.promise.wait(waitScope), 7);
  other.join();

  // Work queued now must be drained by io.run() once the sync wait is over.
  bool ran = false;
  auto later = kj::evalLater([&] {
                 ran = true;
                 io.stop();
               }).eagerlyEvaluate(nullptr);
  port.resumeAfterSyncWait();
  io.run();
  EXPECT_TRUE(ran);
  ::close(fds[1]);
}

}  // namespace
}  // namespace switchboard::net
