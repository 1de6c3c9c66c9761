#include "net/network_thread.h"

#include "wait_until.h"

#include <gtest/gtest.h>
#include <kj/debug.h>

#include <atomic>
#include <future>
#include <thread>

namespace switchboard::net {
namespace {

using testing::waitUntil;

TEST(NetworkThread, PostRunsOnTheLoopThreadInsideKj) {
  NetworkThread thread("post");
  thread.start();
  std::promise<int> result;
  ASSERT_TRUE(thread.post([&] {
    EXPECT_TRUE(thread.isCurrent());
    // Promises may be made here; the task finishes on a later turn of the same loop.
    thread.addTask(
        kj::evalLater([] { return 20; }).then([&](int value) { result.set_value(value + 1); }));
  }));
  EXPECT_EQ(result.get_future().get(), 21);
  EXPECT_FALSE(thread.isCurrent());
}

TEST(NetworkThread, PostsCrossBetweenLoopsInBothDirections) {
  NetworkThread a("a");
  NetworkThread b("b");
  a.start();
  b.start();
  constexpr int kRounds = 1000;
  std::atomic<int> onA{0};
  std::atomic<int> onB{0};
  for (int i = 0; i < kRounds; ++i) {
    a.post([&] {
      ASSERT_TRUE(a.isCurrent());
      b.post([&] {
        ASSERT_TRUE(b.isCurrent());
        ++onB;
        a.post([&] {
          ASSERT_TRUE(a.isCurrent());
          ++onA;
        });
      });
    });
  }
  EXPECT_TRUE(waitUntil([&] { return onA.load() == kRounds; }));
  EXPECT_EQ(onB.load(), kRounds);
}

TEST(NetworkThread, RunSyncReturnsValuesAndPromiseResults) {
  NetworkThread thread("sync");
  thread.start();
  EXPECT_EQ(thread.runSync([] { return 5; }), 5);
  EXPECT_EQ(thread.runSync([] { return kj::evalLater([] { return std::string("later"); }); }),
            "later");
  thread.runSync([] { return kj::evalLater([] {}); });
}

TEST(NetworkThread, RunSyncRethrowsKjAndStdFailuresAsStdExceptions) {
  NetworkThread thread("fail");
  thread.start();
  try {
    thread.runSync([]() -> kj::Promise<int> { return KJ_EXCEPTION(FAILED, "kj says no"); });
    FAIL() << "no exception";
  } catch (std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("kj says no"), std::string::npos) << error.what();
  }
  EXPECT_THROW(thread.runSync([]() -> int { throw std::out_of_range("std says no"); }),
               std::out_of_range);
}

TEST(NetworkThread, ExecutorExecuteSyncFromAPlainThread) {
  NetworkThread thread("executor");
  thread.start();
  int value = 0;
  std::thread plain([&] {
    value = thread.executor().executeSync([] { return kj::evalLater([] { return 99; }); });
  });
  plain.join();
  EXPECT_EQ(value, 99);
}

TEST(NetworkThread, StopFromAnotherThreadRunsAcceptedPostsAndCancelsTasks) {
  NetworkThread thread("stop");
  thread.start();
  std::atomic<int> ran{0};
  std::atomic<bool> taskCancelled{false};
  thread.runSync([&] {
    thread.addTask(
        kj::Promise<void>(kj::NEVER_DONE).attach(kj::defer([&] { taskCancelled = true; })));
  });
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(thread.post([&] { ++ran; }));
  std::thread stopper([&] { thread.stop(); });
  stopper.join();
  EXPECT_EQ(ran.load(), 100);
  EXPECT_TRUE(taskCancelled.load());
  EXPECT_FALSE(thread.isRunning());
  EXPECT_FALSE(thread.post([] {}));
  EXPECT_THROW(thread.runSync([] { return 1; }), std::runtime_error);
  thread.stop();  // idempotent
}

TEST(NetworkThread, StopRequestedFromItsOwnLoop) {
  NetworkThread thread("self-stop");
  thread.start();
  thread.post([&] { thread.stop(); });
  EXPECT_TRUE(waitUntil([&] { return !thread.isRunning(); }));
}

TEST(NetworkThread, RunSyncOnItsOwnThreadIsRefused) {
  NetworkThread thread("self");
  thread.start();
  bool refused = thread.runSync([&] {
    try {
      thread.runSync([] { return 1; });
      return false;
    } catch (std::logic_error&) {
      return true;
    }
  });
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace switchboard::net
