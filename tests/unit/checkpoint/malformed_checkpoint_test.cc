// One test per way a checkpoint can be broken. Each error must name the file and, where one is
// at fault, the tensor: an operator with a 700 GB checkpoint needs to know which shard to fetch
// again.
#include <filesystem>

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/checkpoint_writer.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/checkpoint/test_util.h"

namespace moemesh::checkpoint {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::MicroConfig;
using testing::RawHeader;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// A random micro checkpoint cut into several shards.
class MalformedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = temp_ / "model";
    ASSERT_TRUE(WriteRandomCheckpoint(MicroConfig(), 3, 256 << 10, directory_).ok());
    ASSERT_TRUE(Checkpoint::Open(directory_).ok());
  }
  std::string IndexPath() const { return directory_ + "/model.safetensors.index.json"; }
  nlohmann::json Index() const { return nlohmann::json::parse(ReadFile(IndexPath())); }
  void WriteIndex(const nlohmann::json& index) const { WriteFile(IndexPath(), index.dump(2)); }

  // A single-file checkpoint (model.safetensors, no index) with the given raw header and
  // `data_bytes` zero bytes of data.
  std::string WriteRawCheckpoint(const std::string& header, size_t data_bytes) {
    const std::string directory = temp_ / "raw";
    std::filesystem::create_directories(directory);
    WriteFile(directory + "/config.json", ModelConfigToJson(MicroConfig()).dump(2));
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    bytes += header;
    bytes += std::string(data_bytes, '\0');
    WriteFile(directory + "/model.safetensors", bytes);
    return directory;
  }

  TempDir temp_;
  std::string directory_;
};

TEST_F(MalformedCheckpointTest, TruncatedShardNamesFileAndTensor) {
  // Cut the last shard inside its last tensor.
  const nlohmann::json index = Index();
  const std::string shard =
      directory_ + "/" + index["weight_map"]["lm_head.weight"].get<std::string>();
  const std::string bytes = ReadFile(shard);
  auto [header, data_start] = RawHeader(bytes);
  std::string last;
  uint64_t last_end = 0;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    if (entry["data_offsets"][1].get<uint64_t>() > last_end) {
      last_end = entry["data_offsets"][1].get<uint64_t>();
      last = name;
    }
  }
  ASSERT_EQ(data_start + last_end, bytes.size());
  WriteFile(shard, bytes.substr(0, bytes.size() - 100));
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(shard), HasSubstr("'" + last + "'"), HasSubstr("truncated")));
}

TEST_F(MalformedCheckpointTest, HeaderLengthPastEndOfFile) {
  const std::string shard =
      directory_ + "/" + Index()["weight_map"]["model.norm.weight"].get<std::string>();
  std::string bytes = ReadFile(shard);
  const uint64_t length = bytes.size();  // 8 + length > file size
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  WriteFile(shard, bytes);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(checkpoint.status()), AllOf(HasSubstr(shard), HasSubstr("header length")));
}

TEST_F(MalformedCheckpointTest, OverlappingDataOffsets) {
  const std::string directory = WriteRawCheckpoint(
      R"({"model.norm.weight":{"dtype":"BF16","shape":[64],"data_offsets":[0,128]},)"
      R"("model.layers.0.input_layernorm.weight":{"dtype":"BF16","shape":[64],)"
      R"("data_offsets":[64,192]}})",
      192);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(directory + "/model.safetensors"),
                    HasSubstr("'model.layers.0.input_layernorm.weight'"),
                    HasSubstr("'model.norm.weight'"), HasSubstr("overlaps")));
}

TEST_F(MalformedCheckpointTest, OutOfRangeDataOffsets) {
  const std::string directory = WriteRawCheckpoint(
      R"({"model.norm.weight":{"dtype":"BF16","shape":[64],"data_offsets":[0,128]},)"
      R"("lm_head.weight":{"dtype":"BF16","shape":[512,64],"data_offsets":[128,65664]}})",
      1024);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(directory + "/model.safetensors"), HasSubstr("'lm_head.weight'"),
                    HasSubstr("65664")));
}

TEST_F(MalformedCheckpointTest, DataOffsetsDisagreeingWithShape) {
  const std::string directory = WriteRawCheckpoint(
      R"({"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,128]}})", 128);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(directory + "/model.safetensors"), HasSubstr("'model.norm.weight'"),
                    HasSubstr("needs 256 bytes")));
}

TEST_F(MalformedCheckpointTest, UnknownDtype) {
  const std::string directory = WriteRawCheckpoint(
      R"({"model.norm.weight":{"dtype":"BF16","shape":[64],"data_offsets":[0,128]},)"
      R"("model.layers.0.mlp.up_proj.weight":{"dtype":"F8_E5M2","shape":[2,2],)"
      R"("data_offsets":[128,132]}})",
      132);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(directory + "/model.safetensors"),
                    HasSubstr("'model.layers.0.mlp.up_proj.weight'"), HasSubstr("F8_E5M2")));
}

TEST_F(MalformedCheckpointTest, TensorMissingFromIndex) {
  const std::string name = "model.layers.1.mlp.experts.3.up_proj.weight";
  nlohmann::json index = Index();
  ASSERT_TRUE(index["weight_map"].contains(name));
  index["weight_map"].erase(name);
  WriteIndex(index);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  absl::StatusOr<WeightMatrix> weight =
      (*checkpoint)
          ->ReadWeight("model.layers.1.mlp.experts.3.up_proj", config.moe_intermediate_size,
                       config.hidden_size);
  ASSERT_FALSE(weight.ok());
  EXPECT_EQ(weight.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(weight.status()), AllOf(HasSubstr(IndexPath()), HasSubstr("'" + name + "'")));
}

TEST_F(MalformedCheckpointTest, TensorInIndexButMissingFromItsShard) {
  const std::string name = "model.layers.1.mlp.experts.3.up_proj.weight";
  nlohmann::json index = Index();
  const std::string actual_shard = index["weight_map"][name].get<std::string>();
  std::string other_shard;
  for (auto& [tensor, shard] : index["weight_map"].items()) {
    if (shard.get<std::string>() != actual_shard) other_shard = shard.get<std::string>();
  }
  ASSERT_FALSE(other_shard.empty()) << "the micro checkpoint should have several shards";
  index["weight_map"][name] = other_shard;
  WriteIndex(index);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr(directory_ + "/" + other_shard), HasSubstr("'" + name + "'")));
}

TEST_F(MalformedCheckpointTest, ShardListedInIndexMissing) {
  nlohmann::json index = Index();
  index["weight_map"]["model.norm.weight"] = "model-00009-of-000009.safetensors";
  WriteIndex(index);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(checkpoint.status()), AllOf(HasSubstr("model-00009-of-000009.safetensors"),
                                                  HasSubstr("'model.norm.weight'")));
}

TEST_F(MalformedCheckpointTest, ShapeDisagreeingWithConfig) {
  // config.json now says q_lora_rank 128; the shards hold 96.
  nlohmann::ordered_json config =
      nlohmann::ordered_json::parse(ReadFile(directory_ + "/config.json"));
  config["q_lora_rank"] = 128;
  WriteFile(directory_ + "/config.json", config.dump(2));
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& parsed = (*checkpoint)->config();
  ASSERT_EQ(parsed.q_lora_rank, 128);
  const std::string shard =
      directory_ + "/" + (*checkpoint)->ShardOf("model.layers.0.self_attn.q_a_proj.weight");

  absl::StatusOr<WeightMatrix> weight =
      (*checkpoint)
          ->ReadWeight("model.layers.0.self_attn.q_a_proj", parsed.q_lora_rank, parsed.hidden_size);
  ASSERT_FALSE(weight.ok());
  EXPECT_EQ(weight.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(weight.status()),
              AllOf(HasSubstr(shard), HasSubstr("'model.layers.0.self_attn.q_a_proj.weight'"),
                    HasSubstr("[96, 64]"), HasSubstr("[128, 64]")));

  absl::StatusOr<std::vector<float>> norm =
      (*checkpoint)
          ->ReadFloat("model.layers.0.self_attn.q_a_layernorm.weight", {parsed.q_lora_rank});
  ASSERT_FALSE(norm.ok());
  EXPECT_THAT(Message(norm.status()),
              AllOf(HasSubstr("'model.layers.0.self_attn.q_a_layernorm.weight'"), HasSubstr("[96]"),
                    HasSubstr("[128]")));
  EXPECT_EQ((*checkpoint)->BytesRead(), 0u);  // nothing read on a shape mismatch
}

TEST_F(MalformedCheckpointTest, Fp8WeightWithoutItsScale) {
  const std::string name = "model.layers.0.mlp.gate_proj.weight_scale_inv";
  nlohmann::json index = Index();
  index["weight_map"].erase(name);
  WriteIndex(index);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  absl::StatusOr<WeightMatrix> weight =
      (*checkpoint)
          ->ReadWeight("model.layers.0.mlp.gate_proj", config.intermediate_size,
                       config.hidden_size);
  ASSERT_FALSE(weight.ok());
  EXPECT_THAT(Message(weight.status()), AllOf(HasSubstr("'model.layers.0.mlp.gate_proj.weight'"),
                                              HasSubstr("'" + name + "'")));
}

}  // namespace
}  // namespace moemesh::checkpoint
