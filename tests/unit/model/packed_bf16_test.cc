// The lossless packed BF16 form (core/kernels/cpu/packed_bf16.h): every value comes back bit for
// bit, rows with more than 16 distinct high bytes stay plain, and products over the packed form
// are bitwise those of Linear over the BF16 matrix on every SIMD path, row count and thread count.
#include "core/kernels/cpu/packed_bf16.h"

#include <cstring>
#include <random>
#include <vector>

#include "core/checkpoint/dtype.h"
#include "core/kernels/cpu/linear.h"
#include "core/kernels/cpu/simd_path.h"
#include "core/kernels/cpu/threading.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh::kernels {
namespace {

using checkpoint::WeightMatrix;

// Normal rows (std 0.05, at most ~12 distinct high bytes each), except: row 3 holds all 256 high
// bytes (finite values only: exponent 0xFF excluded, so 254 of them with both signs) and row 7
// has 17 distinct high bytes (one too many); row 5 holds zeros, -0, subnormals and the largest
// finite values among normal ones (packable: few distinct high bytes).
WeightMatrix TestMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  WeightMatrix weight;
  weight.format = WeightMatrix::Format::kBFloat16;
  weight.rows = rows;
  weight.cols = cols;
  weight.bf16.resize(rows * cols);
  for (auto& value : weight.bf16) value = checkpoint::FloatToBFloat16(normal(generator));
  if (rows > 7) {
    uint16_t* wide = weight.bf16.data() + 3 * cols;
    int high = 0;
    for (int64_t c = 0; c < cols; ++c) {
      do high = (high + 1) % 256;
      while ((high & 0x7F) == 0x7F);  // exponent 0xFF (inf/NaN) left out
      wide[c] = static_cast<uint16_t>((high << 8) | (c * 37 % 256));
    }
    uint16_t* seventeen = weight.bf16.data() + 7 * cols;
    for (int64_t c = 0; c < cols; ++c) {
      seventeen[c] = static_cast<uint16_t>(((0x30 + c % 17) << 8) | (c % 256));
    }
    uint16_t* special = weight.bf16.data() + 5 * cols;
    const uint16_t values[] = {0x0000, 0x8000, 0x0001, 0x807F, 0x7F7F, 0xFF7F};
    for (int64_t c = 0; c < 6; ++c) special[c * 7] = values[c];
  }
  return weight;
}

std::vector<float> RandomInput(int64_t count, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(count);
  for (auto& value : x) value = normal(generator);
  return x;
}

class PathGuard {
 public:
  PathGuard() : saved_(ActiveSimdPath()) {}
  ~PathGuard() { EXPECT_TRUE(SetSimdPath(saved_).ok()); }

 private:
  SimdPath saved_;
};

TEST(PackedBf16Test, EveryValueComesBackAndWideRowsStayPlain) {
  const WeightMatrix weight = TestMatrix(40, 320, 1);
  auto packed = PackedBf16Matrix::Pack(weight);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->rows, 40);
  EXPECT_EQ(packed->cols, 320);
  EXPECT_EQ(packed->row_bytes, 320 / 64 * 96 + 16);
  EXPECT_EQ(packed->plain_rows, (std::vector<int64_t>{3, 7}));
  ASSERT_EQ(packed->packed_rows.size(), 38u);
  EXPECT_EQ(packed->packed_rows[3], 4);  // rows 0, 1, 2, 4, ...
  EXPECT_EQ(packed->StorageBytes(), 38 * packed->row_bytes + 2 * 320 * 2);
  const WeightMatrix unpacked = packed->Unpack();
  ASSERT_EQ(unpacked.bf16.size(), weight.bf16.size());
  EXPECT_EQ(std::memcmp(unpacked.bf16.data(), weight.bf16.data(), 2 * weight.bf16.size()), 0);
  for (int64_t r = 0; r < weight.rows; ++r) {
    for (int64_t c = 0; c < weight.cols; ++c) {
      ASSERT_EQ(packed->Bits(r, c), weight.bf16[r * weight.cols + c]) << r << ", " << c;
    }
  }
}

TEST(PackedBf16Test, RejectsOtherFormatsAndWidths) {
  WeightMatrix float_weight;
  float_weight.rows = 2;
  float_weight.cols = 64;
  float_weight.values.resize(128);
  EXPECT_EQ(PackedBf16Matrix::Pack(float_weight).status().code(),
            absl::StatusCode::kInvalidArgument);
  const WeightMatrix narrow = TestMatrix(4, 48, 2);
  EXPECT_EQ(PackedBf16Matrix::Pack(narrow).status().code(), absl::StatusCode::kInvalidArgument);
}

// Linear over the packed form = Linear over the BF16 matrix, bit for bit, for every path, row
// count (1 to 37, register tiles of 1 to 4 rows and their tails) and 1 or 2 threads.
TEST(PackedBf16Test, ProductsAreBitwiseThoseOfTheBf16Matrix) {
  PathGuard guard;
  const WeightMatrix weight = TestMatrix(301, 192, 3);  // 301: partial output tiles
  auto packed = PackedBf16Matrix::Pack(weight);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_FALSE(packed->plain_rows.empty());
  const WeightMatrix only_packable = [&] {
    WeightMatrix copy = TestMatrix(301, 192, 3);
    for (int64_t r : {3, 7}) {  // make the wide rows packable: every row packed, no reordering
      for (int64_t c = 0; c < copy.cols; ++c) copy.bf16[r * copy.cols + c] = copy.bf16[c];
    }
    return copy;
  }();
  auto all_packed = PackedBf16Matrix::Pack(only_packable);
  ASSERT_TRUE(all_packed.ok());
  ASSERT_TRUE(all_packed->plain_rows.empty());
  constexpr int64_t kMaxRows = 37;
  const std::vector<float> x = RandomInput(kMaxRows * weight.cols, 4);
  for (SimdPath path : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512}) {
    if (!SimdPathSupported(path)) continue;
    ASSERT_TRUE(SetSimdPath(path).ok());
    for (int threads : {1, 2}) {
      SetComputeThreads(threads);
      for (int64_t rows : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{8}, int64_t{9}, kMaxRows}) {
        for (const auto& [plain, form] :
             {std::pair{&weight, &*packed}, std::pair{&only_packable, &*all_packed}}) {
          std::vector<float> expected(rows * plain->rows, -1.0f), actual(rows * plain->rows, -2.0f);
          Linear(x.data(), rows, *plain, expected.data());
          LinearPacked(x.data(), rows, *form, actual.data());
          ASSERT_EQ(std::memcmp(expected.data(), actual.data(), sizeof(float) * expected.size()), 0)
              << SimdPathName(path) << ", " << threads << " threads, " << rows << " rows, "
              << form->plain_rows.size() << " plain rows";
        }
      }
    }
  }
  SetComputeThreads(2);
}

// The fixture's lm_head (BF16, hidden 64) is held packed, so the goldens and the SIMD-path test
// (batch_invariance_test.cc) run over the packed product.
TEST(PackedBf16Test, TinyR1LmHeadIsPackedLosslessly) {
  const testing::LoadedModel loaded = testing::LoadModelOrDie(testing::FixtureDir());
  const auto& weights = loaded.model->weights();
  ASSERT_TRUE(weights.lm_head_packed.has_value());
  EXPECT_EQ(weights.lm_head_packed->rows, weights.lm_head.rows);
  EXPECT_TRUE(weights.lm_head.bf16.empty());  // the values live in the packed form only
  EXPECT_EQ(weights.lm_head_packed->packed_rows.size() + weights.lm_head_packed->plain_rows.size(),
            static_cast<size_t>(weights.lm_head.rows));
  // hidden 64: 96 bytes of weights + a 16-byte table per packed row, against 128 in BF16.
  const auto& packed = *weights.lm_head_packed;
  EXPECT_EQ(packed.row_bytes, 112);
  EXPECT_EQ(packed.StorageBytes(),
            static_cast<int64_t>(packed.packed_rows.size() * 112 + packed.plain_rows.size() * 128));
  EXPECT_LT(packed.StorageBytes(), weights.lm_head.StorageBytes());
}

}  // namespace
}  // namespace moemesh::kernels
