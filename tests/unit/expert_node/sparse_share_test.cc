// The full-size DeepSeek-V3 layout as a sparse checkpoint (make-checkpoint --preset
// deepseek-v3-671b --sparse): 163 shards with real headers and sizes but no data blocks. An
// expert node's share of a 144-node placement is read byte range by byte range: only its
// experts' weights and scales, and exactly the bytes the plan says it holds.
#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <tuple>

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/checkpoint_writer.h"
#include "core/checkpoint/sparse_checkpoint.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "core/model/expert_shard.h"
#include "core/placement/cluster_sizing.h"
#include "expert_node/expert_service.h"
#include "gtest/gtest.h"
#include "tests/unit/checkpoint/test_util.h"

namespace moemesh::expert_node {
namespace {

namespace fs = std::filesystem;
using checkpoint::testing::TempDir;

const std::string kRealConfig =
    std::string(MOEMESH_SHARED_DIR) + "/fixtures/deepseek-v3-671b/config.json";

// gate, up, down [2048 x 7168] FP8 + [16 x 56] F32 scales each.
constexpr uint64_t kExpertBytes = 3 * (2048ull * 7168 + 16 * 56 * 4);

TEST(BalancedShardAssignmentTest, EqualCutsKeepOrderAndFillEveryShard) {
  // Cut points at 0, 10, 20 of 30 bytes: a tensor goes where its first byte falls.
  EXPECT_EQ(checkpoint::BalancedShardAssignment({4, 4, 4, 4, 4, 4, 6}, 3),
            (std::vector<int>{0, 0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(checkpoint::BalancedShardAssignment({5, 5}, 1), (std::vector<int>{0, 0}));
}

TEST(SparseCheckpointTest, ExpertNodeShareReadsOnlyItsRangesOfTheFullSizeLayout) {
  TempDir dir;
  const std::string model_dir = dir / "deepseek-v3-671b";
  absl::StatusOr<checkpoint::CheckpointPreset> preset =
      checkpoint::FindCheckpointPreset("deepseek-v3-671b");
  ASSERT_TRUE(preset.ok()) << preset.status();
  ASSERT_TRUE(preset->sparse_only);
  ASSERT_TRUE(checkpoint::WriteSparseCheckpoint(preset->config, 163, model_dir).ok());

  // The preset is the released config.
  absl::StatusOr<checkpoint::ModelConfig> real = checkpoint::LoadModelConfig(kRealConfig);
  ASSERT_TRUE(real.ok()) << real.status();
  EXPECT_EQ(checkpoint::ModelConfigToJson(preset->config), checkpoint::ModelConfigToJson(*real));

  // 163 shards of real size taking (almost) no disk.
  uint64_t apparent = 0;
  uint64_t allocated = 0;
  int shards = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    ++shards;
    struct stat info {};
    ASSERT_EQ(::stat(entry.path().c_str(), &info), 0);
    apparent += static_cast<uint64_t>(info.st_size);
    allocated += static_cast<uint64_t>(info.st_blocks) * 512;
  }
  EXPECT_EQ(shards, 163);
  EXPECT_TRUE(fs::exists(fs::path(model_dir) / "model-00163-of-000163.safetensors"));
  EXPECT_GT(apparent, checkpoint::CheckpointDataBytes(preset->config));
  EXPECT_LT(allocated, 64ull << 20) << "the shards are not sparse";

  absl::StatusOr<std::unique_ptr<checkpoint::Checkpoint>> opened =
      checkpoint::Checkpoint::Open(model_dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  checkpoint::Checkpoint& model = **opened;
  ASSERT_TRUE(model.is_fp8());
  // Per layer 14 attention tensors (5 FP8 weights with scales, 2 norms, 2 layer norms); dense
  // MLP 6; MoE 2 (gate, bias) + 257 experts x 6. 3 x 20 + 58 x 1558 + MTP (1558 + 7) + 3.
  EXPECT_EQ(model.TensorNames().size(), 91992u);
  absl::StatusOr<const checkpoint::TensorInfo*> scales =
      model.Find("model.layers.3.mlp.experts.0.down_proj.weight_scale_inv");
  ASSERT_TRUE(scales.ok()) << scales.status();
  EXPECT_EQ((*scales)->shape, (std::vector<int64_t>{56, 16}));

  // DeepSeek's decode deployment: 144 expert GPUs, 2 routed experts per GPU per layer.
  placement::SizingInput input;
  input.config = model.config();
  input.gpu_memory_bytes = 80ull << 30;
  input.expert_nodes = 144;
  input.redundant_experts = 32;
  absl::StatusOr<placement::ClusterSizing> sizing = placement::SizeCluster(input);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  moemesh::v1::Placement placement;
  placement.set_version(1);
  const std::vector<int> layers = model.config().MoeLayers();
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::vector<std::vector<int>>& replicas = sizing->placement.layers[l].replicas;
    for (size_t expert = 0; expert < replicas.size(); ++expert) {
      moemesh::v1::ExpertReplicas* entry = placement.add_experts();
      entry->set_layer(layers[l]);
      entry->set_expert(static_cast<uint32_t>(expert));
      for (int node : replicas[expert]) entry->add_node_ids("expert-" + std::to_string(node));
    }
  }
  const std::vector<model::ExpertKey> share = ShareOf(placement, "expert-7");
  ASSERT_EQ(share.size(), 58u * 2);

  // What the share would hold: its experts' six tensors each, nothing else.
  uint64_t share_bytes = 0;
  for (const model::ExpertKey& key : share) {
    for (const char* projection : {"gate_proj", "up_proj", "down_proj"}) {
      for (const char* suffix : {".weight", ".weight_scale_inv"}) {
        absl::StatusOr<const checkpoint::TensorInfo*> info =
            model.Find("model.layers." + std::to_string(key.first) + ".mlp.experts." +
                       std::to_string(key.second) + "." + projection + suffix);
        ASSERT_TRUE(info.ok()) << info.status();
        share_bytes += (*info)->data_end - (*info)->data_begin;
      }
    }
  }
  EXPECT_EQ(share_bytes, share.size() * kExpertBytes);
  EXPECT_EQ(share_bytes, sizing->expert_node_weight_bytes);

  // Load the share's first layers (4 experts: 176 MB of zeros; the whole share would be 5 GB)
  // as the expert node's loader does, and check every byte range it read.
  const std::vector<model::ExpertKey> loaded(share.begin(), share.begin() + 4);
  absl::StatusOr<std::unique_ptr<model::ExpertShard>> shard =
      model::ExpertShard::Load(model, loaded);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(static_cast<uint64_t>((*shard)->StorageBytes()), loaded.size() * kExpertBytes);
  std::set<std::tuple<std::string, uint64_t, uint64_t>> expected;
  for (const model::ExpertKey& key : loaded) {
    for (const char* projection : {"gate_proj", "up_proj", "down_proj"}) {
      for (const char* suffix : {".weight", ".weight_scale_inv"}) {
        const std::string name = "model.layers." + std::to_string(key.first) + ".mlp.experts." +
                                 std::to_string(key.second) + "." + projection + suffix;
        const checkpoint::TensorInfo* info = *model.Find(name);
        expected.insert({model_dir + "/" + model.ShardOf(name), info->data_begin, info->data_end});
      }
    }
  }
  std::set<std::tuple<std::string, uint64_t, uint64_t>> actual;
  for (const checkpoint::ByteRange& range : model.ReadRanges()) {
    actual.insert({range.file, range.begin, range.end});
  }
  EXPECT_EQ(actual, expected);
  EXPECT_EQ(model.BytesRead(), loaded.size() * kExpertBytes);
}

}  // namespace
}  // namespace moemesh::expert_node
