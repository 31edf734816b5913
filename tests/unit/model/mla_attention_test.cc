// The tiled MLA attention core against the untiled reference, and its batch/chunk invariance.
#include "core/model/mla_attention.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace moemesh::model {
namespace {

struct Fixture {
  MlaDims dims;
  std::shared_ptr<LatentBlockPool> pool;
  LatentCache cache;
  std::vector<float> kv_b;
  std::vector<float> query;  // [positions, heads, nope + rope]
  int64_t positions;

  Fixture(MlaDims d, int block_size, int64_t count, uint64_t seed)
      : dims(d),
        pool(std::make_shared<LatentBlockPool>(/*num_layers=*/2, static_cast<int>(d.kv_rank),
                                               static_cast<int>(d.rope), block_size, 0)),
        cache(pool),
        positions(count) {
    std::mt19937_64 engine(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& v, size_t n, float scale) {
      v.resize(n);
      for (float& x : v) x = normal(engine) * scale;
    };
    fill(kv_b, static_cast<size_t>(d.heads * (d.nope + d.value_dim) * d.kv_rank), 0.3f);
    fill(query, static_cast<size_t>(count * d.heads * d.qk_head()), 1.0f);
    std::vector<float> latent, rope;
    for (int layer = 0; layer < 2; ++layer) {
      // Large spread: scores far apart exercise the online rescaling.
      fill(latent, static_cast<size_t>(count * d.kv_rank), 2.0f);
      fill(rope, static_cast<size_t>(count * d.rope), 2.0f);
      EXPECT_TRUE(cache.Append(layer, latent.data(), rope.data(), count).ok());
    }
    cache.Commit(count);
  }
  const float* Query(int64_t row) const { return query.data() + row * dims.heads * dims.qk_head(); }
  int64_t OutSize(int64_t rows) const { return rows * dims.heads * dims.value_dim; }
};

MlaDims SmallDims() {
  MlaDims d;
  d.heads = 8;
  d.nope = 16;
  d.rope = 8;
  d.value_dim = 12;
  d.kv_rank = 24;
  d.softmax_scale = 1.0f / std::sqrt(24.0f);
  return d;
}

TEST(MlaAttentionTest, TiledMatchesNaiveAcrossLengthsAndBlockSizes) {
  for (int block_size : {4, 16, 64}) {
    for (int64_t count : {1, 3, 16, 17, 64, 65, 150}) {
      Fixture f(SmallDims(), block_size, count, 7 + count);
      for (int layer = 0; layer < 2; ++layer) {
        std::vector<float> tiled(f.OutSize(count)), naive(f.OutSize(count));
        MlaAttentionTiled(f.dims, f.cache, layer, f.kv_b.data(), f.Query(0), count, 0,
                          tiled.data());
        MlaAttentionNaive(f.dims, f.cache, layer, f.kv_b.data(), f.Query(0), count, 0,
                          naive.data());
        double worst = 0.0;
        for (size_t i = 0; i < tiled.size(); ++i) {
          worst = std::max(worst, std::fabs(static_cast<double>(tiled[i]) - naive[i]) /
                                      std::max(1.0, std::fabs(static_cast<double>(naive[i]))));
        }
        EXPECT_LT(worst, 2e-5) << "block " << block_size << " count " << count;
        // The reference is not trivially zero (the comparison could not pass by accident).
        EXPECT_GT(std::fabs(naive[f.OutSize(count) - 1]) + std::fabs(naive[0]), 1e-3);
      }
    }
  }
}

TEST(MlaAttentionTest, RowResultIsBitIdenticalWhateverTheBatchOrChunking) {
  const int64_t count = 130;
  Fixture f(SmallDims(), /*block_size=*/16, count, 11);
  const int layer = 1;
  std::vector<float> whole(f.OutSize(count));
  MlaAttentionTiled(f.dims, f.cache, layer, f.kv_b.data(), f.Query(0), count, 0, whole.data());
  // Chunks of uneven sizes (like a chunked prefill), and each row alone (like a decode step).
  for (int64_t chunk : {1, 7, 16, 50}) {
    std::vector<float> pieces(f.OutSize(count));
    for (int64_t first = 0; first < count; first += chunk) {
      const int64_t rows = std::min(chunk, count - first);
      MlaAttentionTiled(f.dims, f.cache, layer, f.kv_b.data(), f.Query(first), rows, first,
                        pieces.data() + f.OutSize(first));
    }
    EXPECT_EQ(std::memcmp(whole.data(), pieces.data(), sizeof(float) * whole.size()), 0)
        << "chunk " << chunk;
  }
}

TEST(MlaAttentionTest, ExpIsAccurateAndTheSameBitsAtAnyOffset) {
  std::vector<float> values;
  for (float x = -90.0f; x <= 5.0f; x += 0.0137f) values.push_back(x);
  values.push_back(0.0f);
  std::vector<float> computed = values;
  ExpInPlace(computed.data(), static_cast<int64_t>(computed.size()));
  for (size_t i = 0; i < values.size(); ++i) {
    const double expected = std::exp(static_cast<double>(values[i]));
    if (values[i] < -87.0f) {
      EXPECT_LT(computed[i], 1e-37f);
      continue;
    }
    EXPECT_NEAR(computed[i], expected, 3e-7 * expected) << "x = " << values[i];
  }
  EXPECT_EQ(computed.back(), 1.0f);
  // A value in a short tail gives the same bits as inside a full vector.
  for (size_t start = 0; start < 9; ++start) {
    std::vector<float> tail(values.begin() + 100 + start, values.begin() + 103 + start);
    ExpInPlace(tail.data(), static_cast<int64_t>(tail.size()));
    for (size_t i = 0; i < tail.size(); ++i) EXPECT_EQ(tail[i], computed[100 + start + i]);
  }
}

}  // namespace
}  // namespace moemesh::model
