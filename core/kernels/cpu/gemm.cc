#include "core/kernels/cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "core/kernels/cpu/compute_pool.h"
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

// Outputs per work item: about four items per thread, so that a thread the OS deschedules (a
// shared machine) holds up at most a small share; multiples of `align`.
int64_t ItemSize(int64_t count, int threads, int64_t align) {
  const int64_t target = (count + 4 * threads - 1) / (4 * threads);
  return std::max(align, (target + align - 1) / align * align);
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
  const bool wants_panel = task.w.kind == WeightOperand::Kind::kFp8 ||
                           task.w.kind == WeightOperand::Kind::kBf16Packed;
  const int64_t item = parallel ? ItemSize(outputs, threads, kPanelOutputs) : outputs;
  const int64_t items = (outputs + item - 1) / item;
  // Items are taken dynamically: which thread computes an output never changes its value.
  ParallelFor(items, parallel ? threads : 1, [&](int64_t i) {
    thread_local std::vector<float> panel;
    NtTask part = task;
    part.out_begin = task.out_begin + i * item;
    part.out_end = std::min(task.out_end, part.out_begin + item);
    if (wants_panel) {
      panel.resize(static_cast<size_t>(kPanelOutputs * task.w.cols));
      part.panel = panel.data();
    }
    kernels.nt(part);
  });
}

void RunNnThreaded(const NnTask& task) {
  const IsaKernels& kernels = Active();
  const int64_t columns = task.col_end - task.col_begin;
  if (task.rows <= 0 || columns <= 0) return;
  const int threads = ComputeThreads();
  const bool parallel =
      threads > 1 && task.rows * columns * task.depth >= kParallelMinimumWork && columns >= 128;
  const int64_t item = parallel ? ItemSize(columns, threads, 64) : columns;
  const int64_t items = (columns + item - 1) / item;
  ParallelFor(items, parallel ? threads : 1, [&](int64_t i) {
    NnTask part = task;
    part.col_begin = task.col_begin + i * item;
    part.col_end = std::min(task.col_end, part.col_begin + item);
    kernels.nn(part);
  });
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
