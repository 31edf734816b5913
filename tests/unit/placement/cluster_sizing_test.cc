// moemesh plan's arithmetic on the released DeepSeek-V3 / R1 config, against the hand
// arithmetic of deploy/k8s/README.md.
#include "core/placement/cluster_sizing.h"

#include "gtest/gtest.h"

namespace moemesh::placement {
namespace {

const std::string kRealConfig =
    std::string(MOEMESH_SHARED_DIR) + "/fixtures/deepseek-v3-671b/config.json";

SizingInput RealModel(uint64_t gpu_bytes) {
  absl::StatusOr<checkpoint::ModelConfig> config = checkpoint::LoadModelConfig(kRealConfig);
  EXPECT_TRUE(config.ok()) << config.status();
  SizingInput input;
  if (config.ok()) input.config = *config;
  input.gpu_memory_bytes = gpu_bytes;
  return input;
}

TEST(ClusterSizingTest, DeepSeekV3WeightAndCacheBytes) {
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(RealModel(80ull << 30));
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  // One expert: 3 x (2048 x 7168 FP8 + 16 x 56 F32 scales) = 44,050,944 bytes.
  EXPECT_EQ(sizing->bytes_per_routed_expert, 44050944u);
  EXPECT_EQ(sizing->moe_layers, 58);
  EXPECT_EQ(sizing->expert_bytes_total, 58ull * 256 * 44050944);  // 654,068,416,512
  // 61 layers x (512 + 64) float32.
  EXPECT_EQ(sizing->kv_bytes_per_token, 140544u);
  EXPECT_EQ(sizing->checkpoint_bytes,
            sizing->expert_bytes_total + sizing->attention_weight_bytes + sizing->mtp_bytes);
  // Embeddings and lm_head alone are 2 x 129280 x 7168 x 2 bytes = 3.7 GB; all of the
  // attention side is 19.08 GB.
  EXPECT_EQ(sizing->attention_weight_bytes, 19082195296u);
  // The MTP layer: one MoE block (257 experts) plus its embeddings, head and eh_proj.
  EXPECT_GT(sizing->mtp_bytes, 257u * 44050944);
}

TEST(ClusterSizingTest, ExpertPoolFitsEightyGigabyteGpus) {
  SizingInput input = RealModel(80ull << 30);
  input.redundant_experts = 32;
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(input);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  // 72 GiB usable / (58 x 44,050,944) = 30.26 -> 30 experts per layer per GPU; 288 / 30 -> 10.
  EXPECT_EQ(sizing->usable_gpu_bytes, 77309411328u);
  EXPECT_EQ(sizing->max_experts_per_node_per_layer, 30);
  EXPECT_EQ(sizing->min_expert_nodes, 10);
  EXPECT_EQ(sizing->expert_nodes, 10);
  EXPECT_EQ(sizing->max_useful_expert_nodes, 288);
  EXPECT_LE(sizing->experts_per_node_per_layer, 30);
  EXPECT_LE(sizing->expert_node_weight_bytes, sizing->usable_gpu_bytes);
  EXPECT_EQ(sizing->placement.layers.size(), 58u);
}

TEST(ClusterSizingTest, DeepSeekDecodeDeploymentHoldsTwoExpertsPerGpu) {
  SizingInput input = RealModel(80ull << 30);
  input.expert_nodes = 144;  // 18 nodes x 8 GPUs
  input.redundant_experts = 32;
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(input);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->experts_per_node_per_layer, 2);  // ceil(288 / 144)
  EXPECT_EQ(sizing->expert_node_weight_bytes, 2ull * 58 * 44050944);  // 5.11 GB
  // Pod memory: held bytes + 4 GiB, rounded up to whole GiB.
  EXPECT_EQ(sizing->expert_pod.memory_bytes, 9ull << 30);
  EXPECT_EQ(sizing->expert_pod.gpus, 1);
}

TEST(ClusterSizingTest, DeepSeekPrefillDeploymentHoldsNinePerGpu) {
  SizingInput input = RealModel(80ull << 30);
  input.expert_nodes = 32;  // 4 nodes x 8 GPUs
  input.redundant_experts = 32;
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(input);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->redundant_experts, 32);
  EXPECT_EQ(sizing->physical_experts_per_layer, 288);
  EXPECT_EQ(sizing->experts_per_node_per_layer, 9);  // 288 / 32
  EXPECT_EQ(sizing->expert_node_weight_bytes, 9ull * 58 * 44050944);
}

TEST(ClusterSizingTest, AttentionNodeCacheCapacity) {
  SizingInput input = RealModel(80ull << 30);
  input.max_batch_tokens = 512;
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(input);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  // Workspace: 512 x 4 B x (129280 + 2 x 18432 + 128 x (2 x 512 + 64) + 4 x 7168).
  EXPECT_EQ(sizing->activation_bytes, 512ull * 4 * (129280 + 36864 + 139264 + 28672));
  const uint64_t free_bytes =
      77309411328ull - sizing->attention_weight_bytes - sizing->activation_bytes;
  // Whole 64-position blocks of 140,544 bytes per position.
  EXPECT_EQ(sizing->cache_tokens_per_attention_node,
            static_cast<int64_t>(free_bytes / (140544ull * 64) * 64));
  EXPECT_EQ(sizing->cache_tokens_per_attention_node, 409408);
  EXPECT_EQ(sizing->kv_cache_bytes_per_attention_node, 409408ull * 140544);
}

TEST(ClusterSizingTest, RefusesWhatDoesNotFit) {
  SizingInput input = RealModel(80ull << 30);
  input.expert_nodes = 8;  // 8 x 30 < 256
  absl::StatusOr<ClusterSizing> sizing = SizeCluster(input);
  EXPECT_EQ(sizing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(sizing.status().message().find("at least 9"), std::string::npos)
      << sizing.status();
  // 16 GB holds the attention weights of no attention node.
  EXPECT_EQ(SizeCluster(RealModel(16ull << 30)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SizeCluster(RealModel(0)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseByteSizeTest, BinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("80GiB"), 80ull << 30);
  EXPECT_EQ(*ParseByteSize("80GB"), 80000000000ull);
  EXPECT_EQ(*ParseByteSize("141G"), 141000000000ull);
  EXPECT_EQ(*ParseByteSize("1.5TiB"), 3ull << 39);
  EXPECT_EQ(*ParseByteSize("1024"), 1024u);
  EXPECT_FALSE(ParseByteSize("80 apples").ok());
  EXPECT_FALSE(ParseByteSize("GiB").ok());
}

}  // namespace
}  // namespace moemesh::placement
