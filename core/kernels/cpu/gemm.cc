#include "core/kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/kernels/cpu/gemm_isa.h"
#include "core/kernels/cpu/gemm_threads.h"
#include "core/kernels/cpu/simd_path.h"
#include "core/kernels/cpu/threading.h"

namespace moemesh::kernels {
namespace internal {
namespace {

const IsaKernels& Active() {
  switch (ActiveSimdPath()) {
#if defined(MOEMESH_HAVE_AVX512_KERNELS)
    case SimdPath::kAvx512: return Avx512Kernels();
#endif
#if defined(MOEMESH_HAVE_AVX2_KERNELS)
    case SimdPath::kAvx2: return Avx2Kernels();
#endif
    default: return ScalarKernels();
  }
}

// Below this many multiply-adds a product is not worth waking other threads for.
constexpr int64_t kParallelMinimumWork = int64_t{1} << 18;

// [begin, end) of part `part` of `parts` over [0, count), boundaries multiples of `align`.
std::pair<int64_t, int64_t> Share(int64_t count, int parts, int part, int64_t align) {
  const int64_t units = (count + align - 1) / align;
  const int64_t begin = std::min(count, units * part / parts * align);
  const int64_t end = std::min(count, units * (part + 1) / parts * align);
  return {begin, end};
}

}  // namespace

void RunNtThreaded(const NtTask& task) {
  const IsaKernels& kernels = Active();
  const int64_t outputs = task.out_end - task.out_begin;
  if (task.rows <= 0 || outputs <= 0) return;
  const int threads = ComputeThreads();
  const bool parallel =
      threads > 1 && task.rows * outputs * task.w.cols >= kParallelMinimumWork &&
      outputs >= 2 * kPanelOutputs;
  const bool wants_panel = task.w.kind == WeightOperand::Kind::kFp8;
#pragma omp parallel num_threads(threads) if (parallel)
  {
    thread_local std::vector<float> panel;
    NtTask part = task;
    const auto [begin, end] =
        Share(outputs, omp_get_num_threads(), omp_get_thread_num(), kPanelOutputs);
    part.out_begin = task.out_begin + begin;
    part.out_end = task.out_begin + end;
    if (wants_panel) {
      panel.resize(static_cast<size_t>(kPanelOutputs * task.w.cols));
      part.panel = panel.data();
    }
    if (part.out_begin < part.out_end) kernels.nt(part);
  }
}

void RunNnThreaded(const NnTask& task) {
  const IsaKernels& kernels = Active();
  const int64_t columns = task.col_end - task.col_begin;
  if (task.rows <= 0 || columns <= 0) return;
  const int threads = ComputeThreads();
  const bool parallel =
      threads > 1 && task.rows * columns * task.depth >= kParallelMinimumWork && columns >= 128;
#pragma omp parallel num_threads(threads) if (parallel)
  {
    NnTask part = task;
    const auto [begin, end] = Share(columns, omp_get_num_threads(), omp_get_thread_num(), 64);
    part.col_begin = task.col_begin + begin;
    part.col_end = task.col_begin + end;
    if (part.col_begin < part.col_end) kernels.nn(part);
  }
}

}  // namespace internal

void MatMulTransposed(const float* x, int64_t x_stride, int64_t rows, const float* w,
                      int64_t w_stride, int64_t n, int64_t k, float* y, int64_t y_stride) {
  internal::NtTask task;
  task.x = x;
  task.x_stride = x_stride;
  task.rows = rows;
  task.w.kind = internal::WeightOperand::Kind::kF32;
  task.w.data = w;
  task.w.stride = w_stride;
  task.w.rows = n;
  task.w.cols = k;
  task.y = y;
  task.y_stride = y_stride;
  task.out_begin = 0;
  task.out_end = n;
  internal::RunNtThreaded(task);
}

void MatMul(const float* x, int64_t x_stride, int64_t rows, const float* b, int64_t b_stride,
            int64_t k, int64_t n, float* y, int64_t y_stride, bool accumulate) {
  internal::NnTask task;
  task.x = x;
  task.x_stride = x_stride;
  task.rows = rows;
  task.b = b;
  task.b_stride = b_stride;
  task.depth = k;
  task.y = y;
  task.y_stride = y_stride;
  task.col_begin = 0;
  task.col_end = n;
  task.accumulate = accumulate;
  internal::RunNnThreaded(task);
}

}  // namespace moemesh::kernels
