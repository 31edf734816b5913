// Dense and FP8-block linear layers on the CPU: y = x W^T.
#pragma once

#include <cstdint>

#include "core/checkpoint/weight_matrix.h"

namespace moemesh::kernels {

// y[rows, weight.rows] = x[rows, weight.cols] · weight^T, float32 accumulation.
// Float32 weights go straight to OpenBLAS sgemm/sgemv. FP8-block weights use a fused
// dequantize-and-dot GEMV for small row counts (decode: reads 1 byte per weight) and otherwise
// dequantize one block-row stripe at a time into a scratch buffer for sgemm (prefill).
// `x` rows are contiguous with stride weight.cols; `y` rows with stride weight.rows.
void Linear(const float* x, int64_t rows, const checkpoint::WeightMatrix& weight, float* y);

// Same, with explicit leading dimensions (elements between consecutive rows of x and y).
void LinearStrided(const float* x, int64_t x_stride, int64_t rows,
                   const checkpoint::WeightMatrix& weight, float* y, int64_t y_stride);

// Row count at or below which FP8 weights take the fused GEMV path.
inline constexpr int64_t kFp8FusedGemvMaxRows = 8;

}  // namespace moemesh::kernels
