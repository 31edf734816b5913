// Loading ../shared/fixtures/tiny-r1: config, every tensor of the layout, FP8 block
// dequantization (partial edge blocks) against a hand computation on the raw file bytes,
// and byte-range accounting for one expert.
#include <cmath>
#include <cstring>
#include <set>
#include <tuple>

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "gtest/gtest.h"
#include "tests/unit/checkpoint/test_util.h"

namespace moemesh::checkpoint {
namespace {

using testing::kFixtureDir;
using testing::RawHeader;
using testing::ReadFile;

std::unique_ptr<Checkpoint> OpenFixture() {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(kFixtureDir);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return checkpoint.ok() ? *std::move(checkpoint) : nullptr;
}

// Decodes e4m3fn independently of the library: (-1)^s * 2^(e-7) * (1 + m/8), subnormal
// 2^-6 * m/8.
double HandFp8(uint8_t bits) {
  const int exponent = (bits >> 3) & 0xF;
  const int mantissa = bits & 7;
  const double magnitude = exponent == 0 ? std::ldexp(mantissa / 8.0, -6)
                                         : std::ldexp(1.0 + mantissa / 8.0, exponent - 7);
  return (bits & 0x80) ? -magnitude : magnitude;
}

// Element (row, col) of a raw tensor in the fixture: its bytes located through the raw header.
struct RawTensor {
  std::string bytes;
  uint64_t begin = 0;
  std::vector<int64_t> shape;
  std::string dtype;
};

RawTensor FindRaw(const std::string& name) {
  const nlohmann::json index =
      nlohmann::json::parse(ReadFile(kFixtureDir + "/model.safetensors.index.json"));
  const std::string shard = index["weight_map"][name].get<std::string>();
  RawTensor raw;
  raw.bytes = ReadFile(kFixtureDir + "/" + shard);
  auto [header, data_start] = RawHeader(raw.bytes);
  raw.begin = data_start + header[name]["data_offsets"][0].get<uint64_t>();
  raw.shape = header[name]["shape"].get<std::vector<int64_t>>();
  raw.dtype = header[name]["dtype"].get<std::string>();
  return raw;
}

float RawF32(const RawTensor& raw, int64_t index) {
  float value;
  std::memcpy(&value, raw.bytes.data() + raw.begin + 4 * index, 4);
  return value;
}

TEST(CheckpointFixtureTest, ReadsConfig) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  const ModelConfig& config = checkpoint->config();
  EXPECT_EQ(config.vocab_size, 129280);
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.intermediate_size, 288);
  EXPECT_EQ(config.moe_intermediate_size, 160);
  EXPECT_EQ(config.num_hidden_layers, 4);
  EXPECT_EQ(config.num_nextn_predict_layers, 1);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.q_lora_rank, 96);
  EXPECT_EQ(config.kv_lora_rank, 64);
  EXPECT_EQ(config.qk_nope_head_dim, 32);
  EXPECT_EQ(config.qk_rope_head_dim, 16);
  EXPECT_EQ(config.v_head_dim, 32);
  EXPECT_EQ(config.n_routed_experts, 16);
  EXPECT_EQ(config.n_shared_experts, 1);
  EXPECT_EQ(config.num_experts_per_tok, 4);
  EXPECT_EQ(config.n_group, 4);
  EXPECT_EQ(config.topk_group, 2);
  EXPECT_EQ(config.first_k_dense_replace, 1);
  EXPECT_DOUBLE_EQ(config.routed_scaling_factor, 2.5);
  EXPECT_TRUE(config.norm_topk_prob);
  EXPECT_EQ(config.scoring_func, "sigmoid");
  EXPECT_DOUBLE_EQ(config.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(config.rope_theta, 10000.0);
  ASSERT_TRUE(config.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(config.rope_scaling->factor, 40.0);
  EXPECT_EQ(config.rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(config.rope_scaling->beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(config.rope_scaling->mscale_all_dim, 1.0);
  ASSERT_TRUE(checkpoint->is_fp8());
  EXPECT_EQ(config.quantization->block_rows, 128);
  EXPECT_EQ(config.quantization->block_cols, 128);
  EXPECT_EQ(config.NumMoeLayers(), 3);
  EXPECT_FALSE(config.IsMoeLayer(0));
  EXPECT_TRUE(config.IsMoeLayer(3));
}

// The layout make-checkpoint writes is exactly the fixture's: same names, shapes and dtypes.
TEST(CheckpointFixtureTest, FindsEveryTensorOfTheLayout) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  std::set<std::string> expected;
  for (const TensorSpec& spec : CheckpointLayout(checkpoint->config())) {
    SCOPED_TRACE(spec.name);
    expected.insert(spec.name);
    absl::StatusOr<const TensorInfo*> info = checkpoint->Find(spec.name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ((*info)->shape, spec.shape);
    switch (spec.kind) {
      case TensorSpec::Kind::kLinear: {
        EXPECT_EQ((*info)->dtype, DType::kF8E4M3);
        const std::string scale = spec.name + "_scale_inv";
        expected.insert(scale);
        absl::StatusOr<const TensorInfo*> scale_info = checkpoint->Find(scale);
        ASSERT_TRUE(scale_info.ok()) << scale_info.status();
        EXPECT_EQ((*scale_info)->dtype, DType::kF32);
        EXPECT_EQ((*scale_info)->shape,
                  (std::vector<int64_t>{(spec.shape[0] + 127) / 128, (spec.shape[1] + 127) / 128}));
        break;
      }
      case TensorSpec::Kind::kGateBias:
        EXPECT_EQ((*info)->dtype, DType::kF32);
        break;
      default:
        EXPECT_EQ((*info)->dtype, DType::kBF16);
    }
  }
  const std::vector<std::string> names = checkpoint->TensorNames();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected);
  EXPECT_EQ(names.size(), 502u);
  EXPECT_EQ(CheckpointDataBytes(checkpoint->config()), 68628820u);  // index metadata.total_size
}

TEST(CheckpointFixtureTest, ReadsEveryTensorFinite) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  for (const TensorSpec& spec : CheckpointLayout(checkpoint->config())) {
    SCOPED_TRACE(spec.name);
    std::vector<float> values;
    if (spec.kind == TensorSpec::Kind::kLinear) {
      absl::StatusOr<WeightMatrix> weight =
          checkpoint->ReadWeight(spec.name.substr(0, spec.name.size() - 7), spec.shape[0],
                                 spec.shape[1], /*dequantize=*/true);
      ASSERT_TRUE(weight.ok()) << weight.status();
      values = std::move(weight->values);
    } else {
      absl::StatusOr<std::vector<float>> read = checkpoint->ReadFloat(spec.name, spec.shape);
      ASSERT_TRUE(read.ok()) << read.status();
      values = *std::move(read);
    }
    for (float value : values) ASSERT_TRUE(std::isfinite(value));
  }
}

// q_b_proj [192, 96]: scales [2, 1], the second row block and the only column block partial.
// mlp.down_proj [64, 288]: scales [1, 3], the third column block 32 wide.
TEST(CheckpointFixtureTest, DequantizesFp8BlocksWithPartialEdges) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  const struct {
    std::string prefix;
    int64_t rows, cols;
    std::vector<std::pair<int64_t, int64_t>> elements;
  } cases[] = {
      {"model.layers.0.self_attn.q_b_proj",
       192,
       96,
       {{0, 0}, {127, 95}, {128, 0}, {150, 50}, {191, 95}}},
      {"model.layers.0.mlp.down_proj",
       64,
       288,
       {{0, 0}, {10, 127}, {10, 128}, {63, 255}, {10, 270}, {63, 287}}},
      {"model.layers.2.mlp.experts.7.down_proj", 64, 160, {{5, 129}, {63, 159}}},
  };
  for (const auto& test_case : cases) {
    SCOPED_TRACE(test_case.prefix);
    absl::StatusOr<WeightMatrix> fp8 =
        checkpoint->ReadWeight(test_case.prefix, test_case.rows, test_case.cols);
    ASSERT_TRUE(fp8.ok()) << fp8.status();
    ASSERT_EQ(fp8->format, WeightMatrix::Format::kFp8Block);
    EXPECT_EQ(fp8->scale_rows(), (test_case.rows + 127) / 128);
    EXPECT_EQ(fp8->scale_cols(), (test_case.cols + 127) / 128);
    absl::StatusOr<WeightMatrix> dense =
        checkpoint->ReadWeight(test_case.prefix, test_case.rows, test_case.cols, true);
    ASSERT_TRUE(dense.ok()) << dense.status();
    ASSERT_EQ(dense->format, WeightMatrix::Format::kFloat32);

    const RawTensor weight = FindRaw(test_case.prefix + ".weight");
    const RawTensor scale = FindRaw(test_case.prefix + ".weight_scale_inv");
    ASSERT_EQ(weight.dtype, "F8_E4M3");
    ASSERT_EQ(scale.shape, (std::vector<int64_t>{fp8->scale_rows(), fp8->scale_cols()}));
    for (auto [row, col] : test_case.elements) {
      const uint8_t code =
          static_cast<uint8_t>(weight.bytes[weight.begin + row * test_case.cols + col]);
      const float block_scale = RawF32(scale, (row / 128) * scale.shape[1] + col / 128);
      const float expected = static_cast<float>(HandFp8(code)) * block_scale;
      EXPECT_EQ(dense->values[row * test_case.cols + col], expected) << row << "," << col;
      EXPECT_EQ(fp8->fp8[row * test_case.cols + col], code);
    }
  }
}

TEST(CheckpointFixtureTest, WidensBF16AndF32Exactly) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  absl::StatusOr<std::vector<float>> embed =
      checkpoint->ReadFloat("model.embed_tokens.weight", {129280, 64});
  ASSERT_TRUE(embed.ok()) << embed.status();
  const RawTensor raw_embed = FindRaw("model.embed_tokens.weight");
  for (int64_t index : {int64_t{0}, int64_t{1000 * 64 + 5}, int64_t{129279 * 64 + 63}}) {
    uint16_t bits;
    std::memcpy(&bits, raw_embed.bytes.data() + raw_embed.begin + 2 * index, 2);
    const uint32_t word = static_cast<uint32_t>(bits) << 16;
    float expected;
    std::memcpy(&expected, &word, 4);
    EXPECT_EQ((*embed)[index], expected);
  }
  absl::StatusOr<std::vector<float>> bias =
      checkpoint->ReadFloat("model.layers.1.mlp.gate.e_score_correction_bias", {16});
  ASSERT_TRUE(bias.ok()) << bias.status();
  const RawTensor raw_bias = FindRaw("model.layers.1.mlp.gate.e_score_correction_bias");
  for (int i = 0; i < 16; ++i) EXPECT_EQ((*bias)[i], RawF32(raw_bias, i));
}

// An expert node loading layer 2, expert 5 touches exactly its 6 tensors' bytes.
TEST(CheckpointFixtureTest, LoadingOneExpertReadsOnlyItsByteRanges) {
  std::unique_ptr<Checkpoint> checkpoint = OpenFixture();
  ASSERT_NE(checkpoint, nullptr);
  const ModelConfig& config = checkpoint->config();
  const std::string prefix = "model.layers.2.mlp.experts.5";
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.moe_intermediate_size;
  ASSERT_TRUE(checkpoint->ReadWeight(prefix + ".gate_proj", inter, hidden).ok());
  ASSERT_TRUE(checkpoint->ReadWeight(prefix + ".up_proj", inter, hidden).ok());
  ASSERT_TRUE(checkpoint->ReadWeight(prefix + ".down_proj", hidden, inter).ok());

  std::set<std::tuple<std::string, uint64_t, uint64_t>> expected;
  uint64_t expected_bytes = 0;
  for (const char* projection : {"gate_proj", "up_proj", "down_proj"}) {
    for (const char* suffix : {".weight", ".weight_scale_inv"}) {
      const std::string name = prefix + "." + projection + suffix;
      absl::StatusOr<const TensorInfo*> info = checkpoint->Find(name);
      ASSERT_TRUE(info.ok()) << info.status();
      expected.insert(
          {kFixtureDir + "/" + checkpoint->ShardOf(name), (*info)->data_begin, (*info)->data_end});
      expected_bytes += (*info)->data_end - (*info)->data_begin;
    }
  }
  const std::vector<ByteRange> ranges = checkpoint->ReadRanges();
  ASSERT_EQ(ranges.size(), 6u);
  std::set<std::tuple<std::string, uint64_t, uint64_t>> actual;
  for (const ByteRange& range : ranges) actual.insert({range.file, range.begin, range.end});
  EXPECT_EQ(actual, expected);
  EXPECT_EQ(checkpoint->BytesRead(), expected_bytes);
  EXPECT_EQ(expected_bytes, 3u * (160 * 64 + 2 * 4));  // 3 x (weight + 2 scales)
}

}  // namespace
}  // namespace moemesh::checkpoint
