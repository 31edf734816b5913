// A linear layer's weight as the checkpoint stores it: float32, or FP8 e4m3 with block scales.
#pragma once

#include <cstdint>
#include <vector>

namespace moemesh::checkpoint {

// Weight of y = x W^T with W of shape [rows = out_features, cols = in_features], row-major.
// kFloat32: `values` holds rows*cols floats (F16/F32 tensors, and BF16 unless kept as BF16).
// kBFloat16: `bf16` holds rows*cols bfloat16 bit patterns (the checkpoint's bytes; widening to
//   float32 is exact, so kernels read half the bytes and get the same products).
// kFp8Block: `fp8` holds rows*cols e4m3 codes and `block_scales` one float32 per
//   [block_rows x block_cols] block, shape [ceil(rows/block_rows), ceil(cols/block_cols)]; the
//   real weight is fp8 * scale (DeepSeek-V3 `weight_scale_inv`; edge blocks are partial).
struct WeightMatrix {
  enum class Format { kFloat32, kBFloat16, kFp8Block };
  Format format = Format::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> fp8;
  std::vector<float> block_scales;
  int block_rows = 128;
  int block_cols = 128;

  int64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  // Bytes of weight data a full pass over the matrix reads.
  int64_t StorageBytes() const {
    switch (format) {
      case Format::kFloat32: return rows * cols * 4;
      case Format::kBFloat16: return rows * cols * 2;
      case Format::kFp8Block: break;
    }
    return rows * cols + static_cast<int64_t>(block_scales.size()) * 4;
  }
  // The dequantized weight, [rows, cols] float32 (exact: fp8 value times its block scale, or the
  // widened bf16 value).
  std::vector<float> Dequantize() const;
};

}  // namespace moemesh::checkpoint
