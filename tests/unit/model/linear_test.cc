// The linear and GEMM kernels (core/kernels/cpu/linear.h, gemm.h) on every SIMD path this CPU
// runs: against a float64 product of the dequantized weights, and bit for bit against each other
// and across row counts (batch invariance), on shapes with partial edge blocks and vectors.
#include "core/kernels/cpu/linear.h"

#include <cstring>
#include <random>
#include <vector>

#include "core/checkpoint/dtype.h"
#include "core/kernels/cpu/gemm.h"
#include "core/kernels/cpu/simd_path.h"
#include "core/kernels/cpu/threading.h"
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

WeightMatrix RandomBf16(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  WeightMatrix weight;
  weight.format = WeightMatrix::Format::kBFloat16;
  weight.rows = rows;
  weight.cols = cols;
  weight.bf16.resize(rows * cols);
  for (auto& value : weight.bf16) value = checkpoint::FloatToBFloat16(normal(generator));
  return weight;
}

WeightMatrix RandomFloat(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  WeightMatrix weight;
  weight.rows = rows;
  weight.cols = cols;
  weight.values.resize(rows * cols);
  for (auto& value : weight.values) value = normal(generator);
  return weight;
}

std::vector<float> RandomInput(int64_t count, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(count);
  for (auto& value : x) value = normal(generator);
  return x;
}

std::vector<SimdPath> SupportedPaths() {
  std::vector<SimdPath> paths;
  for (SimdPath path : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512}) {
    if (SimdPathSupported(path)) paths.push_back(path);
  }
  return paths;
}

// Restores the process's SIMD path when a test ends.
class PathGuard {
 public:
  PathGuard() : saved_(ActiveSimdPath()) {}
  ~PathGuard() { EXPECT_TRUE(SetSimdPath(saved_).ok()); }

 private:
  SimdPath saved_;
};

std::vector<float> RunLinear(const WeightMatrix& weight, const std::vector<float>& x,
                             int64_t rows) {
  std::vector<float> y(rows * weight.rows, -1.0f);
  Linear(x.data(), rows, weight, y.data());
  return y;
}

void ExpectNearReference(const WeightMatrix& weight, const std::vector<float>& x, int64_t rows,
                         const std::vector<float>& y) {
  const std::vector<float> dense = weight.Dequantize();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < weight.rows; ++o) {
      double expected = 0;
      for (int64_t i = 0; i < weight.cols; ++i) {
        expected += static_cast<double>(x[r * weight.cols + i]) * dense[o * weight.cols + i];
      }
      ASSERT_NEAR(y[r * weight.rows + o], expected, 1e-4 * (1 + std::fabs(expected)))
          << SimdPathName(ActiveSimdPath()) << " rows " << rows << " row " << r << " out " << o;
    }
  }
}

// Every path: close to the float64 product, and the same bits for every row count, every path
// and 1 or 2 threads.
void ExpectExactAndInvariant(const WeightMatrix& weight) {
  PathGuard guard;
  constexpr int64_t kMaxRows = 37;
  const std::vector<float> x = RandomInput(kMaxRows * weight.cols, weight.rows);
  std::vector<float> first;  // [kMaxRows, out] from the first path with all rows in one call
  for (SimdPath path : SupportedPaths()) {
    ASSERT_TRUE(SetSimdPath(path).ok());
    const std::vector<float> all = RunLinear(weight, x, kMaxRows);
    ExpectNearReference(weight, x, kMaxRows, all);
    if (first.empty()) first = all;
    EXPECT_EQ(std::memcmp(first.data(), all.data(), sizeof(float) * all.size()), 0)
        << SimdPathName(path) << " differs from " << SimdPathName(SupportedPaths()[0]);
    for (int64_t rows : {1, 2, 3, 5, 8, 9, 16}) {
      const std::vector<float> some = RunLinear(weight, x, rows);
      EXPECT_EQ(std::memcmp(all.data(), some.data(), sizeof(float) * some.size()), 0)
          << SimdPathName(path) << ": " << rows << " rows differ from the same rows in " << kMaxRows;
    }
  }
}

TEST(LinearTest, Fp8MatchesReferenceAndIsBatchInvariantOnEveryPath) {
  ExpectExactAndInvariant(RandomFp8(300, 200, 1));  // edge blocks of 44 rows and 72 columns
  ExpectExactAndInvariant(RandomFp8(70, 135, 2));   // 135 = 128 + 7: a partial 16-lane vector
}

TEST(LinearTest, Bf16MatchesReferenceAndIsBatchInvariantOnEveryPath) {
  ExpectExactAndInvariant(RandomBf16(130, 200, 3));
  ExpectExactAndInvariant(RandomBf16(9, 23, 4));
}

TEST(LinearTest, Float32MatchesReferenceAndIsBatchInvariantOnEveryPath) {
  ExpectExactAndInvariant(RandomFloat(66, 96, 5));
}

TEST(LinearTest, ThreadCountDoesNotChangeResults) {
  const WeightMatrix weight = RandomFp8(1024, 512, 6);  // large enough to run on 2 threads
  const std::vector<float> x = RandomInput(20 * weight.cols, 7);
  SetComputeThreads(1);
  const std::vector<float> one = RunLinear(weight, x, 20);
  SetComputeThreads(2);
  const std::vector<float> two = RunLinear(weight, x, 20);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), sizeof(float) * one.size()), 0);
}

TEST(LinearTest, Fp8DecodeCoversEveryCode) {
  PathGuard guard;
  for (SimdPath path : SupportedPaths()) {
    ASSERT_TRUE(SetSimdPath(path).ok());
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
      EXPECT_EQ(y, checkpoint::Fp8E4M3ToFloat(static_cast<uint8_t>(code)))
          << SimdPathName(path) << " code " << code;
    }
  }
}

TEST(LinearTest, Float32WeightsSmallExample) {
  WeightMatrix weight;
  weight.rows = 3;
  weight.cols = 2;
  weight.values = {1, 2, 3, 4, 5, 6};
  std::vector<float> x = {1, 1, 2, 0};
  std::vector<float> y(6);
  Linear(x.data(), 2, weight, y.data());
  EXPECT_EQ(y, (std::vector<float>{3, 7, 11, 2, 6, 10}));
}

// MatMul (x · b): against float64, and bit-identical across row counts, paths and accumulation.
TEST(GemmTest, MatMulMatchesReferenceAndIsBatchInvariant) {
  PathGuard guard;
  constexpr int64_t kRows = 13, kDepth = 70, kCols = 150;  // 150 = 2 x 64 + 16 + 6
  const std::vector<float> x = RandomInput(kRows * kDepth, 8);
  const std::vector<float> b = RandomInput(kDepth * kCols, 9);
  std::vector<float> first;
  for (SimdPath path : SupportedPaths()) {
    ASSERT_TRUE(SetSimdPath(path).ok());
    std::vector<float> y(kRows * kCols);
    MatMul(x.data(), kDepth, kRows, b.data(), kCols, kDepth, kCols, y.data(), kCols);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < kCols; ++c) {
        double expected = 0;
        for (int64_t k = 0; k < kDepth; ++k) {
          expected += static_cast<double>(x[r * kDepth + k]) * b[k * kCols + c];
        }
        ASSERT_NEAR(y[r * kCols + c], expected, 1e-4 * (1 + std::fabs(expected)));
      }
    }
    if (first.empty()) first = y;
    EXPECT_EQ(std::memcmp(first.data(), y.data(), sizeof(float) * y.size()), 0)
        << SimdPathName(path);
    std::vector<float> one(kCols);
    MatMul(x.data() + 5 * kDepth, kDepth, 1, b.data(), kCols, kDepth, kCols, one.data(), kCols);
    EXPECT_EQ(std::memcmp(one.data(), y.data() + 5 * kCols, sizeof(float) * kCols), 0);
    // Accumulating adds onto y: starting from y = 0 gives the same bits as overwriting.
    std::vector<float> accumulated(kRows * kCols, 0.0f);
    MatMul(x.data(), kDepth, kRows, b.data(), kCols, kDepth, kCols, accumulated.data(), kCols,
           /*accumulate=*/true);
    EXPECT_EQ(std::memcmp(accumulated.data(), y.data(), sizeof(float) * y.size()), 0);
  }
}

TEST(GemmTest, MatMulTransposedEqualsLinearOnFloatWeights) {
  const WeightMatrix weight = RandomFloat(40, 48, 10);
  const std::vector<float> x = RandomInput(6 * 48, 11);
  std::vector<float> y(6 * 40), expected = RunLinear(weight, x, 6);
  MatMulTransposed(x.data(), 48, 6, weight.values.data(), 48, 40, 48, y.data(), 40);
  EXPECT_EQ(y, expected);
}

TEST(SimdPathTest, ParsesNamesAndRejectsUnknown) {
  EXPECT_EQ(*ParseSimdPath("avx512"), SimdPath::kAvx512);
  EXPECT_EQ(*ParseSimdPath("avx2"), SimdPath::kAvx2);
  EXPECT_EQ(*ParseSimdPath("scalar"), SimdPath::kScalar);
  EXPECT_FALSE(ParseSimdPath("sse").ok());
  EXPECT_TRUE(SimdPathSupported(SimdPath::kScalar));
  EXPECT_TRUE(SimdPathSupported(BestSupportedSimdPath()));
}

}  // namespace
}  // namespace moemesh::kernels
