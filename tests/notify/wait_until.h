#pragma once
// Polling for a condition another thread makes true. The cap is only a failure guard
// against hanging forever, never the thing measured.

#include <chrono>
#include <thread>

namespace switchboard::notify::testing {

template <class Predicate>
bool waitUntil(Predicate predicate, std::chrono::seconds cap = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + cap;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace switchboard::notify::testing
