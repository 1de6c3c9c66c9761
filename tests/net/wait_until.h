#pragma once
// Polling for a condition another thread makes true. The deadline is only a failure guard
// against hanging forever on a broken build, never the thing measured.

#include <chrono>
#include <thread>

namespace switchboard::net::testing {

template <class Predicate>
bool waitUntil(Predicate predicate, std::chrono::seconds guard = std::chrono::seconds(60)) {
  auto deadline = std::chrono::steady_clock::now() + guard;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace switchboard::net::testing
