// A lossless 12-bit storage of BF16 weight matrices for the memory-bound products (the lm_head of
// a decode step reads every one of its vocab x hidden weights for a handful of rows).
//
// A BF16 value is 16 bits: sign, 8 exponent bits, 7 mantissa bits. The low byte (exponent bit 0
// and the mantissa) is kept as is; the high byte (sign and exponent bits 7..1) takes few distinct
// values within one row of a weight matrix (their magnitudes span a few binary orders), so each
// row stores a table of at most 16 high bytes and a 4-bit index per weight: 12 bits per weight
// plus 16 bytes per row, every value reproduced bit for bit. Rows with more than 16 distinct high
// bytes are kept as plain BF16. Products over the packed form decode the same float32 values as
// over the BF16 matrix and sum them in the same order (gemm_isa.h), so the results are bitwise
// those of Linear on the BF16 matrix.
//
// Packed row layout (cols a multiple of 64), arranged for the 16-lane kernels: for each block of
// 64 weights (four vectors of 16; weight 16 v + l of the block is lane l of vector v), 64 low bytes
// (byte 4 l + v) then 16 little-endian 16-bit words of indices (word l holds vector v's index in
// bits 4 v .. 4 v + 3): 96 bytes per 64 weights; after the last block, the 16-byte table.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/weight_matrix.h"

namespace moemesh::kernels {

struct PackedBf16Matrix {
  int64_t rows = 0;  // the matrix's rows (packed + plain)
  int64_t cols = 0;
  int64_t row_bytes = 0;  // bytes of one packed row: cols / 64 * 96 + 16
  std::vector<uint8_t> packed;        // [packed_rows.size(), row_bytes]
  std::vector<int64_t> packed_rows;   // the original row of each packed row, ascending
  std::vector<uint16_t> plain;        // [plain_rows.size(), cols] BF16 bits
  std::vector<int64_t> plain_rows;    // the original row of each plain row, ascending

  // Bytes a product reads: packed rows, plain rows (the row maps are not read per output).
  int64_t StorageBytes() const {
    return static_cast<int64_t>(packed.size() + plain.size() * sizeof(uint16_t));
  }

  // Packs a BF16 matrix. Errors: InvalidArgument when `weight` is not BF16 or its column count
  // is not a positive multiple of 64.
  static absl::StatusOr<PackedBf16Matrix> Pack(const checkpoint::WeightMatrix& weight);

  // The BF16 bits of element (row, col), from whichever form holds the row (tests).
  uint16_t Bits(int64_t row, int64_t col) const;

  // The BF16 matrix it was packed from, bit for bit (tests, benchmarks).
  checkpoint::WeightMatrix Unpack() const;
};

// y[rows, weight.rows] = x[rows, weight.cols] · weight^T with x rows contiguous (stride cols) and
// y rows contiguous (stride weight.rows); bitwise equal to Linear on the BF16 matrix it was packed
// from, on every SIMD path and thread count.
void LinearPacked(const float* x, int64_t rows, const PackedBf16Matrix& weight, float* y);

}  // namespace moemesh::kernels
