#include "net/cross_thread_completion.h"

#include "net/network_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <optional>
#include <thread>

namespace switchboard::net {
namespace {

TEST(CrossThreadCompletion, FulfilledFromAPlainThread) {
  NetworkThread loop("completion");
  loop.start();
  std::optional<std::thread> worker;
  int result = loop.runSync([&] {
    auto pending = makeCompletion<int>();
    // What the store writer thread does: compute, then call back.
    worker.emplace([complete = pending.completion] { complete(42); });
    return kj::mv(pending.promise);
  });
  worker->join();
  EXPECT_EQ(result, 42);
}

TEST(CrossThreadCompletion, VoidCompletionAndFailure) {
  NetworkThread loop("completion-void");
  loop.start();
  std::optional<std::thread> worker;
  loop.runSync([&] {
    auto pending = makeCompletion<void>();
    worker.emplace([complete = pending.completion] { complete(); });
    return kj::mv(pending.promise);
  });
  worker->join();

  try {
    loop.runSync([&] {
      auto pending = makeCompletion<int>();
      worker.emplace([complete = pending.completion] {
        complete.fail("disk full");
        complete(1);  // ignored: only the first outcome counts
      });
      return kj::mv(pending.promise);
    });
    FAIL() << "no exception";
  } catch (std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("disk full"), std::string::npos) << error.what();
  }
  worker->join();
}

TEST(CrossThreadCompletion, PromiseDroppedBeforeTheCallbackRuns) {
  NetworkThread loop("completion-drop");
  loop.start();
  std::function<void(int)> callback;
  loop.runSync([&] {
    auto pending = makeCompletion<int>();
    callback = pending.completion;
    // pending.promise is dropped here: the KJ side cancelled.
  });
  std::thread worker([&] { callback(7); });
  worker.join();
  callback = nullptr;
  EXPECT_EQ(loop.runSync([] { return 3; }), 3);  // the loop is unharmed
}

TEST(CrossThreadCompletion, DestroyedWithoutBeingCalledRejects) {
  NetworkThread loop("completion-abandon");
  loop.start();
  std::optional<std::thread> worker;
  try {
    loop.runSync([&] {
      auto pending = makeCompletion<int>();
      worker.emplace([complete = std::move(pending.completion)]() mutable {
        // Forget about it: the copy dies with this thread's lambda.
      });
      return kj::mv(pending.promise);
    });
    FAIL() << "no exception";
  } catch (std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("abandoned"), std::string::npos) << error.what();
  }
  worker->join();
}

}  // namespace
}  // namespace switchboard::net
