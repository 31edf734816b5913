// The FP8 block linear kernels (fused GEMV and dequantize+GEMM) against a plain dequantized
// float64 product, on shapes with partial edge blocks in both dimensions.
#include "core/kernels/cpu/linear.h"

#include <random>
#include <vector>

#include "core/checkpoint/dtype.h"
#include "gtest/gtest.h"

namespace moemesh::kernels {
namespace {

using checkpoint::WeightMatrix;

WeightMatrix RandomFp8(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<int> code(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  WeightMatrix weight;
  weight.format = WeightMatrix::Format::kFp8Block;
  weight.rows = rows;
  weight.cols = cols;
  weight.fp8.resize(rows * cols);
  for (auto& value : weight.fp8) {
    int c = code(generator);
    if ((c & 0x7F) == 0x7F) c &= 0xFE;  // avoid NaN codes
    value = static_cast<uint8_t>(c);
  }
  weight.block_scales.resize(weight.scale_rows() * weight.scale_cols());
  for (auto& value : weight.block_scales) value = scale(generator);
  return weight;
}

void ExpectMatchesReference(const WeightMatrix& weight, int64_t rows) {
  std::mt19937_64 generator(rows);
  std::normal_distribution<float> normal;
  std::vector<float> x(rows * weight.cols);
  for (auto& value : x) value = normal(generator);
  std::vector<float> y(rows * weight.rows);
  Linear(x.data(), rows, weight, y.data());
  const std::vector<float> dense = weight.Dequantize();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < weight.rows; ++o) {
      double expected = 0;
      for (int64_t i = 0; i < weight.cols; ++i) {
        expected += static_cast<double>(x[r * weight.cols + i]) * dense[o * weight.cols + i];
      }
      ASSERT_NEAR(y[r * weight.rows + o], expected, 1e-4 * (1 + std::fabs(expected)))
          << "rows " << rows << " row " << r << " out " << o;
    }
  }
}

TEST(LinearTest, Fp8FusedGemvMatchesDequantizedProduct) {
  const WeightMatrix weight = RandomFp8(300, 200, 1);  // edge blocks of 44 rows and 72 columns
  for (int64_t rows : {int64_t{1}, int64_t{3}, kFp8FusedGemvMaxRows}) ExpectMatchesReference(weight, rows);
}

TEST(LinearTest, Fp8PrefillGemmMatchesDequantizedProduct) {
  const WeightMatrix weight = RandomFp8(576, 260, 2);
  ExpectMatchesReference(weight, 37);
}

TEST(LinearTest, Fp8DecodeCoversEveryCode) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7F) == 0x7F) continue;
    WeightMatrix weight;
    weight.format = WeightMatrix::Format::kFp8Block;
    weight.rows = 1;
    weight.cols = 16;
    weight.fp8.assign(16, static_cast<uint8_t>(code));
    weight.block_scales = {1.0f};
    std::vector<float> x(16, 0.0f);
    x[3] = 1.0f;
    float y = 0;
    Linear(x.data(), 1, weight, &y);
    EXPECT_EQ(y, checkpoint::Fp8E4M3ToFloat(static_cast<uint8_t>(code))) << code;
  }
}

TEST(LinearTest, Float32WeightsUseBlas) {
  WeightMatrix weight;
  weight.rows = 3;
  weight.cols = 2;
  weight.values = {1, 2, 3, 4, 5, 6};
  std::vector<float> x = {1, 1, 2, 0};
  std::vector<float> y(6);
  Linear(x.data(), 2, weight, y.data());
  EXPECT_EQ(y, (std::vector<float>{3, 7, 11, 2, 6, 10}));
}

}  // namespace
}  // namespace moemesh::kernels
