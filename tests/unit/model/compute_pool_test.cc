// The kernels' thread pool (core/kernels/cpu/compute_pool.h): every item runs exactly once, on
// more than one thread when asked for and the pool is free, and inline (in order, on the caller)
// for one thread, from inside an item, and while another caller holds the pool.
#include "core/kernels/cpu/compute_pool.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace moemesh::kernels {
namespace {

TEST(ComputePoolTest, EveryItemRunsExactlyOnce) {
  for (int round = 0; round < 200; ++round) {
    const int64_t count = 1 + round % 37;
    std::vector<std::atomic<int>> runs(count);
    ParallelFor(count, 2, [&](int64_t i) { runs[i].fetch_add(1); });
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(runs[i].load(), 1) << round << ", " << i;
  }
}

TEST(ComputePoolTest, WorkersJoinLongLoops) {
  absl::Mutex mutex;
  std::set<std::thread::id> threads;
  // Items long enough (~1 ms each) that a woken worker claims some of them; on a loaded machine
  // the worker may miss a loop, so up to 50 loops.
  for (int attempt = 0; attempt < 50; ++attempt) {
    ParallelFor(64, 2, [&](int64_t) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      while (std::chrono::steady_clock::now() < until) {
      }
      absl::MutexLock lock(&mutex);
      threads.insert(std::this_thread::get_id());
    });
    absl::MutexLock lock(&mutex);
    if (threads.size() == 2) break;
  }
  absl::MutexLock lock(&mutex);
  EXPECT_EQ(threads.size(), 2u);
}

TEST(ComputePoolTest, OneThreadAndNestedLoopsRunInlineInOrder) {
  std::vector<int64_t> order;
  ParallelFor(5, 1, [&](int64_t i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  std::vector<std::atomic<int>> inner_runs(4 * 3);
  std::atomic<int> inline_inner{0};
  ParallelFor(4, 2, [&](int64_t i) {
    const std::thread::id outer = std::this_thread::get_id();
    int64_t expected = 0;
    bool in_order = true;
    ParallelFor(3, 2, [&](int64_t j) {
      in_order = in_order && j == expected++ && std::this_thread::get_id() == outer;
      inner_runs[i * 3 + j].fetch_add(1);
    });
    if (in_order) inline_inner.fetch_add(1);
  });
  EXPECT_EQ(inline_inner.load(), 4);
  for (auto& runs : inner_runs) EXPECT_EQ(runs.load(), 1);
}

}  // namespace
}  // namespace moemesh::kernels
