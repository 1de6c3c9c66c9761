#include "plugin/call_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace switchboard::plugin {
namespace {

// The sleeps only give a wrong implementation the chance to misbehave; the
// assertions hold for a correct gate whatever the scheduling.
TEST(CallGate, CloseWaitsForTheCallInFlight) {
  CallGate gate;
  std::atomic<bool> entered{false};
  std::atomic<bool> closed{false};
  std::atomic<bool> closedWhileInside{false};
  std::thread call([&] {
    gate.enter();
    entered.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    closedWhileInside.store(closed.load());
    gate.leave();
  });
  while (!entered.load()) std::this_thread::yield();
  gate.close();
  closed.store(true);
  call.join();
  EXPECT_FALSE(closedWhileInside.load());
  gate.open();
}

TEST(CallGate, CallsArrivingWhileClosedWaitUntilOpen) {
  CallGate gate;
  gate.close();
  std::atomic<int> inside{0};
  std::atomic<bool> opened{false};
  std::atomic<int> enteredBeforeOpen{0};
  std::vector<std::thread> calls;
  for (int i = 0; i < 3; ++i) {
    calls.emplace_back([&] {
      gate.enter();
      if (!opened.load()) enteredBeforeOpen.fetch_add(1);
      inside.fetch_add(1);
      gate.leave();
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(inside.load(), 0);
  opened.store(true);
  gate.open();
  for (auto& call : calls) call.join();
  EXPECT_EQ(inside.load(), 3);
  EXPECT_EQ(enteredBeforeOpen.load(), 0);

  // And the gate can be closed again once they left.
  gate.close();
  gate.open();
}

}  // namespace
}  // namespace switchboard::plugin
