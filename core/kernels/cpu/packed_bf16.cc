#include "core/kernels/cpu/packed_bf16.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/kernels/cpu/gemm_isa.h"
#include "core/kernels/cpu/gemm_threads.h"

namespace moemesh::kernels {

using checkpoint::WeightMatrix;

namespace {

constexpr int64_t kBlock = 64;        // weights per block
constexpr int64_t kBlockBytes = 96;   // 64 low bytes + 16 index words
constexpr int64_t kTableBytes = 16;

// Where column `c` of a packed row lives: its low byte and the bit offset of its index.
struct Place {
  int64_t low;         // byte offset of the low byte in the row
  int64_t index_word;  // byte offset of the 16-bit index word in the row
  int shift;           // bit offset of the index in that word
};
inline Place Locate(int64_t c) {
  const int64_t block = c / kBlock * kBlockBytes;
  const int64_t v = c % kBlock / 16, l = c % 16;
  return Place{block + 4 * l + v, block + 64 + 2 * l, static_cast<int>(4 * v)};
}

// The sorted distinct high bytes of a row into `table`; false when there are more than 16.
bool RowTable(const uint16_t* bits, int64_t cols, std::array<uint8_t, 16>& table, int& count) {
  bool seen[256] = {};
  count = 0;
  for (int64_t c = 0; c < cols; ++c) seen[bits[c] >> 8] = true;
  for (int value = 0; value < 256; ++value) {
    if (!seen[value]) continue;
    if (count == 16) return false;
    table[count++] = static_cast<uint8_t>(value);
  }
  return true;
}

void PackRow(const uint16_t* bits, int64_t cols, const std::array<uint8_t, 16>& table, int count,
             uint8_t* out) {
  uint8_t index_of[256] = {};
  for (int i = 0; i < count; ++i) index_of[table[i]] = static_cast<uint8_t>(i);
  std::memset(out, 0, static_cast<size_t>(cols / kBlock * kBlockBytes));
  for (int64_t c = 0; c < cols; ++c) {
    const Place place = Locate(c);
    out[place.low] = static_cast<uint8_t>(bits[c] & 0xFF);
    const int word = (out[place.index_word] | (out[place.index_word + 1] << 8)) |
                     (index_of[bits[c] >> 8] << place.shift);
    out[place.index_word] = static_cast<uint8_t>(word & 0xFF);
    out[place.index_word + 1] = static_cast<uint8_t>(word >> 8);
  }
  uint8_t* table_out = out + cols / kBlock * kBlockBytes;
  for (int i = 0; i < 16; ++i) table_out[i] = table[i < count ? i : 0];
}

// Column c of packed row `row` (table at the row's end).
inline uint16_t PackedBits(const uint8_t* row, int64_t cols, int64_t c) {
  const Place place = Locate(c);
  const int word = row[place.index_word] | (row[place.index_word + 1] << 8);
  const uint8_t high = row[cols / kBlock * kBlockBytes + ((word >> place.shift) & 0x0F)];
  return static_cast<uint16_t>((high << 8) | row[place.low]);
}

}  // namespace

absl::StatusOr<PackedBf16Matrix> PackedBf16Matrix::Pack(const WeightMatrix& weight) {
  if (weight.format != WeightMatrix::Format::kBFloat16) {
    return absl::InvalidArgumentError("PackedBf16Matrix::Pack: the matrix is not BF16");
  }
  if (weight.cols <= 0 || weight.cols % kBlock != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PackedBf16Matrix::Pack: ", weight.cols, " columns is not a positive multiple of 64"));
  }
  PackedBf16Matrix matrix;
  matrix.rows = weight.rows;
  matrix.cols = weight.cols;
  matrix.row_bytes = weight.cols / kBlock * kBlockBytes + kTableBytes;
  std::vector<uint8_t> packable(static_cast<size_t>(weight.rows));
  std::vector<std::array<uint8_t, 16>> tables(static_cast<size_t>(weight.rows));
  std::vector<int> counts(static_cast<size_t>(weight.rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < weight.rows; ++r) {
    packable[r] = RowTable(weight.bf16.data() + r * weight.cols, weight.cols, tables[r], counts[r]);
  }
  for (int64_t r = 0; r < weight.rows; ++r) {
    (packable[r] ? matrix.packed_rows : matrix.plain_rows).push_back(r);
  }
  matrix.packed.resize(matrix.packed_rows.size() * static_cast<size_t>(matrix.row_bytes));
  matrix.plain.resize(matrix.plain_rows.size() * static_cast<size_t>(weight.cols));
  const int64_t packed_count = static_cast<int64_t>(matrix.packed_rows.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < packed_count; ++i) {
    const int64_t r = matrix.packed_rows[i];
    PackRow(weight.bf16.data() + r * weight.cols, weight.cols, tables[r], counts[r],
            matrix.packed.data() + i * matrix.row_bytes);
  }
  for (size_t i = 0; i < matrix.plain_rows.size(); ++i) {
    std::memcpy(matrix.plain.data() + i * weight.cols,
                weight.bf16.data() + matrix.plain_rows[i] * weight.cols,
                sizeof(uint16_t) * weight.cols);
  }
  return matrix;
}

uint16_t PackedBf16Matrix::Bits(int64_t row, int64_t col) const {
  auto packed_at = std::lower_bound(packed_rows.begin(), packed_rows.end(), row);
  if (packed_at != packed_rows.end() && *packed_at == row) {
    return PackedBits(packed.data() + (packed_at - packed_rows.begin()) * row_bytes, cols, col);
  }
  auto plain_at = std::lower_bound(plain_rows.begin(), plain_rows.end(), row);
  return plain[(plain_at - plain_rows.begin()) * cols + col];
}

WeightMatrix PackedBf16Matrix::Unpack() const {
  WeightMatrix matrix;
  matrix.format = WeightMatrix::Format::kBFloat16;
  matrix.rows = rows;
  matrix.cols = cols;
  matrix.bf16.resize(static_cast<size_t>(rows * cols));
  const int64_t packed_count = static_cast<int64_t>(packed_rows.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < packed_count; ++i) {
    const uint8_t* base = packed.data() + i * row_bytes;
    uint16_t* out = matrix.bf16.data() + packed_rows[i] * cols;
    for (int64_t c = 0; c < cols; ++c) out[c] = PackedBits(base, cols, c);
  }
  for (size_t i = 0; i < plain_rows.size(); ++i) {
    std::memcpy(matrix.bf16.data() + plain_rows[i] * cols, plain.data() + i * cols,
                sizeof(uint16_t) * cols);
  }
  return matrix;
}

namespace {

void RunPart(const float* x, int64_t x_stride, int64_t rows, internal::WeightOperand operand,
             float* y, int64_t y_stride) {
  internal::NtTask task;
  task.x = x;
  task.x_stride = x_stride;
  task.rows = rows;
  task.w = operand;
  task.y = y;
  task.y_stride = y_stride;
  task.out_begin = 0;
  task.out_end = operand.rows;
  internal::RunNtThreaded(task);
}

}  // namespace

void LinearPacked(const float* x, int64_t rows, const PackedBf16Matrix& weight, float* y) {
  if (rows <= 0) return;
  internal::WeightOperand packed;
  packed.kind = internal::WeightOperand::Kind::kBf16Packed;
  packed.data = weight.packed.data();
  packed.stride = weight.row_bytes;
  packed.rows = static_cast<int64_t>(weight.packed_rows.size());
  packed.cols = weight.cols;
  internal::WeightOperand plain;
  plain.kind = internal::WeightOperand::Kind::kBf16;
  plain.data = weight.plain.data();
  plain.stride = weight.cols;
  plain.rows = static_cast<int64_t>(weight.plain_rows.size());
  plain.cols = weight.cols;
  if (plain.rows == 0) {  // packed rows are rows 0..rows-1 in order
    RunPart(x, weight.cols, rows, packed, y, weight.rows);
    return;
  }
  // Each part into its own buffer, then every output to its row.
  thread_local std::vector<float> packed_out, plain_out;
  packed_out.resize(static_cast<size_t>(rows * packed.rows));
  plain_out.resize(static_cast<size_t>(rows * plain.rows));
  if (packed.rows > 0) RunPart(x, weight.cols, rows, packed, packed_out.data(), packed.rows);
  RunPart(x, weight.cols, rows, plain, plain_out.data(), plain.rows);
  for (int64_t m = 0; m < rows; ++m) {
    float* row_y = y + m * weight.rows;
    for (int64_t i = 0; i < packed.rows; ++i) {
      row_y[weight.packed_rows[i]] = packed_out[m * packed.rows + i];
    }
    for (int64_t i = 0; i < plain.rows; ++i) {
      row_y[weight.plain_rows[i]] = plain_out[m * plain.rows + i];
    }
  }
}

}  // namespace moemesh::kernels
