#include "core/kernels/cpu/compute_pool.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moemesh::kernels {
namespace {

inline void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

class Pool {
 public:
  void Run(int64_t count, int threads, absl::FunctionRef<void(int64_t)> item) {
    if (threads <= 1 || count <= 1 || busy_.exchange(true, std::memory_order_acquire)) {
      for (int64_t i = 0; i < count; ++i) item(i);
      return;
    }
    {
      absl::MutexLock lock(&mutex_);
      while (static_cast<int>(workers_.size()) < threads - 1) {
        workers_.emplace_back([this] { Work(); });  // detached at exit: the pool lives forever
        workers_.back().detach();
      }
      item_ = &item;
      count_ = count;
      next_.store(0, std::memory_order_relaxed);
      helpers_ = threads - 1;
      joined_ = 0;
      open_ = true;
      ++generation_;
      generation_hint_.store(generation_, std::memory_order_release);
    }
    Claim(item, count);
    absl::MutexLock lock(&mutex_);
    open_ = false;  // a worker arriving from now on does not join
    auto finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return inside_ == 0; };
    mutex_.Await(absl::Condition(&finished));
    item_ = nullptr;
    busy_.store(false, std::memory_order_release);
  }

 private:
  void Claim(absl::FunctionRef<void(int64_t)> item, int64_t count) {
    for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      item(i);
    }
  }

  void Work() {
    uint64_t seen = 0;
    for (;;) {
      // A short spin first: the next product of a decode step usually starts within microseconds.
      for (int spin = 0; spin < 2000 && generation_hint_.load(std::memory_order_acquire) == seen;
           ++spin) {
        Pause();
      }
      const absl::FunctionRef<void(int64_t)>* item;
      int64_t count;
      {
        absl::MutexLock lock(&mutex_);
        auto ready = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          return open_ && generation_ != seen && joined_ < helpers_;
        };
        mutex_.Await(absl::Condition(&ready));
        seen = generation_;
        ++joined_;
        ++inside_;
        item = item_;
        count = count_;
      }
      Claim(*item, count);
      absl::MutexLock lock(&mutex_);
      --inside_;
    }
  }

  absl::Mutex mutex_;
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mutex_);
  const absl::FunctionRef<void(int64_t)>* item_ ABSL_GUARDED_BY(mutex_) = nullptr;
  int64_t count_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
  int helpers_ ABSL_GUARDED_BY(mutex_) = 0;  // workers that may join the current loop
  int joined_ ABSL_GUARDED_BY(mutex_) = 0;   // workers that joined it
  int inside_ ABSL_GUARDED_BY(mutex_) = 0;   // workers still claiming its items
  bool open_ ABSL_GUARDED_BY(mutex_) = false;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> generation_hint_{0};  // generation_, read without the lock while spinning
  std::atomic<bool> busy_{false};
};

}  // namespace

void ParallelFor(int64_t count, int threads, absl::FunctionRef<void(int64_t)> item) {
  static Pool* const pool = new Pool;  // never destroyed: its workers wait on it until exit
  pool->Run(count, threads, item);
}

}  // namespace moemesh::kernels
