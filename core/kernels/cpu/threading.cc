#include "core/kernels/cpu/threading.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>

namespace moemesh::kernels {
namespace {

// omp_set_num_threads only changes the calling thread's setting: threads started later with
// std::thread (gRPC handlers, micro-batch lanes) would still get one OpenMP thread per core. The
// kernels therefore ask for this count explicitly (num_threads clause). 0 = OpenMP's default.
std::atomic<int> compute_threads{0};

}  // namespace

void SetComputeThreads(int threads) {
  if (threads <= 0) return;
  compute_threads.store(threads);
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

int ComputeThreads() {
  const int threads = compute_threads.load();
  return threads > 0 ? threads : omp_get_max_threads();
}

}  // namespace moemesh::kernels
