// A linear layer's weight as the checkpoint stores it: float32, or FP8 e4m3 with block scales.
#pragma once

#include <cstdint>
#include <vector>

namespace moemesh::checkpoint {

// Weight of y = x W^T with W of shape [rows = out_features, cols = in_features], row-major.
// kFloat32: `values` holds rows*cols floats (BF16/F16/F32 checkpoints are widened to float32).
// kFp8Block: `fp8` holds rows*cols e4m3 codes and `block_scales` one float32 per
//   [block_rows x block_cols] block, shape [ceil(rows/block_rows), ceil(cols/block_cols)]; the
//   real weight is fp8 * scale (DeepSeek-V3 `weight_scale_inv`; edge blocks are partial).
struct WeightMatrix {
  enum class Format { kFloat32, kFp8Block };
  Format format = Format::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;
  std::vector<uint8_t> fp8;
  std::vector<float> block_scales;
  int block_rows = 128;
  int block_cols = 128;

  int64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  // Bytes of weight data a full pass over the matrix reads.
  int64_t StorageBytes() const {
    return format == Format::kFloat32
               ? rows * cols * 4
               : rows * cols + static_cast<int64_t>(block_scales.size()) * 4;
  }
  // The dequantized weight, [rows, cols] float32 (exact: fp8 value times its block scale).
  std::vector<float> Dequantize() const;
};

}  // namespace moemesh::checkpoint
