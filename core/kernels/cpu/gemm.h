// Batch-invariant float32 matrix products on the CPU (the kernels behind Linear, and the absorbed
// MLA products). Every output element is computed with the same operations in the same order
// whatever the row count, the tile it falls in, the thread that computes it and the SIMD path
// (see gemm_isa.h for the exact order), so a sequence's results never depend on which other rows
// share its step. Library GEMMs (OpenBLAS) change their summation order with the row count.
#pragma once

#include <cstdint>

namespace moemesh::kernels {

// y[rows, n] = x[rows, k] · w^T with w [n, k] row-major (row stride w_stride), float32
// accumulation. Strides are in elements.
void MatMulTransposed(const float* x, int64_t x_stride, int64_t rows, const float* w,
                      int64_t w_stride, int64_t n, int64_t k, float* y, int64_t y_stride);

// y[rows, n] = x[rows, k] · b with b [k, n] row-major (row stride b_stride); with `accumulate`,
// y += x · b (each output one fused multiply-add chain over k, starting from y).
void MatMul(const float* x, int64_t x_stride, int64_t rows, const float* b, int64_t b_stride,
            int64_t k, int64_t n, float* y, int64_t y_stride, bool accumulate = false);

}  // namespace moemesh::kernels
