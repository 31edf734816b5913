// Internal interface between the GEMM front end (gemm.cc, linear.cc: argument checks, threads)
// and the per-instruction-set kernels (gemm_scalar.cc, gemm_avx2.cc, gemm_avx512.cc, all built
// from gemm_kernels.inc). Not for use outside core/kernels/cpu.
//
// The arithmetic every kernel performs for one output y[m, n] (so that every path, tile shape,
// row count and thread split gives the same bits):
//  - x W^T ("NT"): 16 float32 lanes; lane l accumulates, by fused multiply-add in ascending k,
//    x[m, k] * w[n, k] for the k of each FP8 block (or of the whole row) with
//    (k - block start) % 16 == l (a partial last vector reads zeros beyond the end). FP8 weights
//    enter as their float32 dequantized value (e4m3 * block scale, rounded once, exactly as
//    WeightMatrix::Dequantize); BF16 weights widened exactly (packed BF16, packed_bf16.h, decodes
//    to the same values). Finally the 16 lanes are summed by
//    a fixed tree: s[i] + s[i + 8], then + 4, + 2, + 1.
//  - x B ("NN"): each output is one fused multiply-add chain over k ascending, starting from 0
//    (or from y's value when accumulating).
#pragma once

#include <cstdint>

namespace moemesh::kernels::internal {

// Rows [0, rows) of a weight W [rows, cols] in one of the storage formats.
struct WeightOperand {
  enum class Kind { kF32, kBf16, kFp8, kBf16Packed };
  Kind kind = Kind::kF32;
  // float / uint16_t (bf16 bits) / uint8_t (e4m3 codes) / uint8_t (PackedBf16Matrix rows; cols a
  // multiple of 64)
  const void* data = nullptr;
  int64_t stride = 0;  // elements (bytes for kBf16Packed) between consecutive rows
  int64_t rows = 0;
  int64_t cols = 0;
  // kFp8 only: scales [ceil(rows / block_rows), scale_stride], one per block.
  const float* scales = nullptr;
  int64_t scale_stride = 0;
  int block_rows = 128;
  int block_cols = 128;
};

// y[m, n] = sum_k x[m, k] * W[n, k] for m < rows, out_begin <= n < out_end.
struct NtTask {
  const float* x = nullptr;
  int64_t x_stride = 0;
  int64_t rows = 0;
  WeightOperand w;
  float* y = nullptr;
  int64_t y_stride = 0;
  int64_t out_begin = 0;
  int64_t out_end = 0;
  // Scratch of at least kPanelOutputs * w.cols floats (FP8 and packed BF16 weights with many rows
  // decode a panel of outputs once into it instead of once per row tile).
  float* panel = nullptr;
};

// y[m, n] (+)= sum_k x[m, k] * b[k, n] for m < rows, col_begin <= n < col_end.
struct NnTask {
  const float* x = nullptr;
  int64_t x_stride = 0;
  int64_t rows = 0;
  const float* b = nullptr;
  int64_t b_stride = 0;
  int64_t depth = 0;  // k
  float* y = nullptr;
  int64_t y_stride = 0;
  int64_t col_begin = 0;
  int64_t col_end = 0;
  bool accumulate = false;
};

inline constexpr int64_t kPanelOutputs = 32;

struct IsaKernels {
  void (*nt)(const NtTask& task);
  void (*nn)(const NnTask& task);
};

const IsaKernels& ScalarKernels();
const IsaKernels& Avx2Kernels();    // only when MOEMESH_HAVE_AVX2_KERNELS
const IsaKernels& Avx512Kernels();  // only when MOEMESH_HAVE_AVX512_KERNELS

}  // namespace moemesh::kernels::internal
