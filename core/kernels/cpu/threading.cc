#include "core/kernels/cpu/threading.h"

#include <cblas.h>
#include <omp.h>

namespace moemesh::kernels {

void SetComputeThreads(int threads) {
  if (threads <= 0) return;
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

int ComputeThreads() { return omp_get_max_threads(); }

}  // namespace moemesh::kernels
