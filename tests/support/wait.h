// Waiting on a condition in tests: poll it until it holds or a deadline passes, never spin
// without a bound (a broken feature then fails the test at the deadline instead of hanging until
// ctest's timeout). The deadline is generous: it bounds a failure, it does not measure speed.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace moemesh::testing {

// True as soon as `condition()` holds; false if it still does not after `timeout`.
inline bool WaitUntil(const std::function<bool()>& condition,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace moemesh::testing
