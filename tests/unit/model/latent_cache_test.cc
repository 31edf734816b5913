#include "core/model/latent_cache.h"

#include <vector>

#include "gtest/gtest.h"

namespace moemesh::model {
namespace {

TEST(LatentCacheTest, PagedAppendReadsBackAcrossBlocks) {
  auto pool = std::make_shared<LatentBlockPool>(/*num_layers=*/2, /*kv_lora_rank=*/3,
                                                /*rope_dim=*/2, /*block_size=*/4, /*capacity=*/0);
  LatentCache cache(pool);
  std::vector<float> latent(10 * 3), rope(10 * 2);
  for (size_t i = 0; i < latent.size(); ++i) latent[i] = static_cast<float>(i);
  for (size_t i = 0; i < rope.size(); ++i) rope[i] = 1000.0f + static_cast<float>(i);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(cache.Append(layer, latent.data(), rope.data(), 6).ok());
    ASSERT_TRUE(cache.Append(layer, latent.data() + 18, rope.data() + 12, 4).ok());
  }
  cache.Commit(10);
  EXPECT_EQ(cache.length(), 10);
  EXPECT_EQ(cache.num_blocks(), 3);
  for (int64_t position = 0; position < 10; ++position) {
    const float* block = cache.block_latent(position / 4, 1);
    EXPECT_EQ(block[(position % 4) * 3 + 2], latent[position * 3 + 2]);
    EXPECT_EQ(cache.block_rope_key(position / 4, 0)[(position % 4) * 2 + 1], rope[position * 2 + 1]);
  }
  EXPECT_EQ(pool->used_blocks(), 3);
  cache.Clear();
  EXPECT_EQ(pool->used_blocks(), 0);
}

TEST(LatentCacheTest, BoundedPoolRefusesBeyondCapacityAndFreesOnDestruction) {
  auto pool = std::make_shared<LatentBlockPool>(1, 2, 2, /*block_size=*/8, /*capacity=*/3);
  {
    LatentCache first(pool);
    ASSERT_TRUE(first.Reserve(17).ok());  // 3 blocks
    EXPECT_EQ(pool->free_blocks(), 0);
    LatentCache second(pool);
    absl::Status status = second.Reserve(1);
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(pool->used_blocks(), 3);  // all or nothing
  }
  EXPECT_EQ(pool->used_blocks(), 0);
}

TEST(LatentCacheTest, TruncateForgetsUncommittedPositions) {
  auto pool = std::make_shared<LatentBlockPool>(1, 1, 2, 4, 0);
  LatentCache cache(pool);
  std::vector<float> values(8, 1.0f);
  ASSERT_TRUE(cache.Append(0, values.data(), values.data(), 3).ok());
  cache.Commit(3);
  ASSERT_TRUE(cache.Append(0, values.data(), values.data(), 2).ok());
  EXPECT_EQ(cache.positions(0), 5);
  cache.Truncate(cache.length());
  EXPECT_EQ(cache.positions(0), 3);
  EXPECT_EQ(cache.length(), 3);
}

}  // namespace
}  // namespace moemesh::model
