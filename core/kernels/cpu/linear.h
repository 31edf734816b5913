// Linear layers on the CPU: y = x W^T for weights as the checkpoint stores them.
#pragma once

#include <cstdint>

#include "core/checkpoint/weight_matrix.h"

namespace moemesh::kernels {

// y[rows, weight.rows] = x[rows, weight.cols] · weight^T, float32 accumulation, for float32,
// bfloat16 and FP8-block weights alike with the batch-invariant kernels of gemm.h: each weight
// byte is read once per call for all rows and decoded in registers (few rows) or into a cached
// panel of outputs (many rows); FP8 block partial sums are scaled per block. An output's value
// does not depend on `rows`, on which rows share the call, on the thread count or the SIMD path.
// `x` rows are contiguous with stride weight.cols; `y` rows with stride weight.rows.
void Linear(const float* x, int64_t rows, const checkpoint::WeightMatrix& weight, float* y);

// Same, with explicit leading dimensions (elements between consecutive rows of x and y).
void LinearStrided(const float* x, int64_t x_stride, int64_t rows,
                   const checkpoint::WeightMatrix& weight, float* y, int64_t y_stride);

}  // namespace moemesh::kernels
