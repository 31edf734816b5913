// The checkpoint writer, make-checkpoint's random presets and the BF16 cast, read back through
// Checkpoint.
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "core/checkpoint/bf16_cast.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/checkpoint_writer.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/checkpoint/test_util.h"

namespace moemesh::checkpoint {
namespace {

namespace fs = std::filesystem;
using testing::kFixtureDir;
using testing::MicroConfig;
using testing::RawHeader;
using testing::ReadFile;
using testing::TempDir;

std::vector<std::string> ShardFiles(const std::string& directory) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string PrefixOf(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - 7);  // ".weight"
}

TEST(QuantizeFp8BlockTest, ScalesEachBlockByItsAmaxIncludingPartialEdges) {
  // [130, 260]: scales [2, 3]; the last row block is 2 rows, the last column block 4 columns.
  const int64_t rows = 130, cols = 260;
  std::vector<float> values(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) values[i] = std::sin(0.37f * i) * (1 + i % 7);
  values[129 * cols + 259] = -9.0f;  // the amax of the corner block
  const Fp8BlockQuantized quantized = QuantizeFp8Block(values.data(), rows, cols);
  ASSERT_EQ(quantized.scales.size(), 6u);
  EXPECT_EQ(quantized.scales[1 * 3 + 2], 9.0f / 448.0f);
  EXPECT_EQ(quantized.codes[129 * cols + 259], 0xFE);  // -448
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t col = 0; col < cols; ++col) {
      const float scale = quantized.scales[(row / 128) * 3 + col / 128];
      const float restored = Fp8E4M3ToFloat(quantized.codes[row * cols + col]) * scale;
      // e4m3 keeps 3 mantissa bits: relative error <= 2^-4, absolute near zero <= 2^-10 * scale.
      ASSERT_NEAR(restored, values[row * cols + col],
                  std::fabs(values[row * cols + col]) / 16 + scale / 512)
          << row << "," << col;
    }
  }
}

TEST(CheckpointWriterTest, RejectsNonEmptyDirectoryAndDuplicates) {
  TempDir temp;
  testing::WriteFile(temp / "stale.txt", "x");
  EXPECT_EQ(CheckpointWriter::Create(temp.path(), 1 << 20).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> writer =
      CheckpointWriter::Create(temp / "out", 1 << 20);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const float values[2] = {1, 2};
  ASSERT_TRUE((*writer)->AddF32("a", {2}, values).ok());
  EXPECT_EQ((*writer)->AddF32("a", {2}, values).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*writer)->Add(TensorBytes{"b", DType::kF32, {3}, std::vector<uint8_t>(8)}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointWriterTest, ShardsFollowTheByteBudgetAndHeadersTheSafetensorsFormat) {
  TempDir temp;
  const uint64_t budget = 200 << 10;
  ASSERT_TRUE(WriteRandomCheckpoint(MicroConfig(), 1, budget, temp / "model").ok());
  const std::vector<std::string> shards = ShardFiles(temp / "model");
  ASSERT_GE(shards.size(), 4u);
  const std::regex name_pattern(R"(model-(\d{5})-of-(\d{6})\.safetensors)");
  const nlohmann::json index =
      nlohmann::json::parse(ReadFile(temp / "model/model.safetensors.index.json"));
  uint64_t total = 0;
  std::map<std::string, std::set<std::string>> layer_shards;  // "model.layers.N" -> shards
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file_name = fs::path(shards[i]).filename().string();
    std::smatch match;
    ASSERT_TRUE(std::regex_match(file_name, match, name_pattern)) << file_name;
    EXPECT_EQ(std::stoi(match[1]), static_cast<int>(i + 1));
    EXPECT_EQ(std::stoul(match[2]), shards.size());
    const std::string bytes = ReadFile(shards[i]);
    auto [header, data_start] = RawHeader(bytes);
    EXPECT_EQ((data_start - 8) % 8, 0u) << "header padded to 8 bytes";
    EXPECT_EQ(header["__metadata__"], nlohmann::json({{"format", "pt"}}));
    // Header order is data order, contiguous, and the data fills the file.
    const nlohmann::ordered_json ordered =
        nlohmann::ordered_json::parse(bytes.substr(8, data_start - 8));
    uint64_t offset = 0, tensors = 0, largest = 0;
    for (auto& [name, entry] : ordered.items()) {
      if (name == "__metadata__") continue;
      EXPECT_EQ(entry["data_offsets"][0].get<uint64_t>(), offset) << name;
      const uint64_t size = entry["data_offsets"][1].get<uint64_t>() - offset;
      offset += size;
      largest = std::max(largest, size);
      ++tensors;
      EXPECT_EQ(index["weight_map"][name], file_name) << name;
      const size_t dot = name.find('.', std::string("model.layers.").size());
      if (name.rfind("model.layers.", 0) == 0) layer_shards[name.substr(0, dot)].insert(file_name);
    }
    EXPECT_EQ(data_start + offset, bytes.size());
    EXPECT_TRUE(offset <= budget || tensors == 1) << file_name << " holds " << offset;
    total += offset;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(total, CheckpointDataBytes(MicroConfig()));
  bool some_layer_split = false;
  for (const auto& [layer, files] : layer_shards) some_layer_split |= files.size() > 1;
  EXPECT_TRUE(some_layer_split) << "shard boundaries should cut through layers";
}

TEST(SyntheticCheckpointTest, SameSeedSameBytes) {
  TempDir temp;
  ASSERT_TRUE(WriteRandomCheckpoint(MicroConfig(), 5, 300 << 10, temp / "a").ok());
  ASSERT_TRUE(WriteRandomCheckpoint(MicroConfig(), 5, 300 << 10, temp / "b").ok());
  ASSERT_TRUE(WriteRandomCheckpoint(MicroConfig(), 6, 300 << 10, temp / "c").ok());
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(temp / "a")) {
    names.insert(entry.path().filename().string());
  }
  EXPECT_TRUE(names.count("config.json") && names.count("generation_config.json") &&
              names.count("model.safetensors.index.json"));
  for (const std::string& name : names) {
    EXPECT_EQ(ReadFile(temp / ("a/" + name)), ReadFile(temp / ("b/" + name))) << name;
  }
  const std::string first_shard = fs::path(ShardFiles(temp / "a")[0]).filename().string();
  EXPECT_NE(ReadFile(temp / ("a/" + first_shard)), ReadFile(temp / ("c/" + first_shard)));
}

TEST(SyntheticCheckpointTest, PresetsDescribeTheirShapes) {
  absl::StatusOr<CheckpointPreset> tiny = FindCheckpointPreset("tiny");
  ASSERT_TRUE(tiny.ok());
  // The tiny preset is the fixture's config.json, field for field.
  absl::StatusOr<ModelConfig> fixture = LoadModelConfig(kFixtureDir + "/config.json");
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  EXPECT_EQ(ModelConfigToJson(tiny->config), ModelConfigToJson(*fixture));
  EXPECT_EQ(nlohmann::ordered_json::parse(ReadFile(kFixtureDir + "/config.json")),
            ModelConfigToJson(*fixture));
  absl::StatusOr<CheckpointPreset> bench = FindCheckpointPreset("bench");
  ASSERT_TRUE(bench.ok());
  EXPECT_EQ(bench->config.hidden_size, 1024);
  EXPECT_EQ(bench->config.n_routed_experts, 64);
  const uint64_t bench_bytes = CheckpointDataBytes(bench->config);
  EXPECT_GT(bench_bytes, 1700ull << 20);
  EXPECT_LT(bench_bytes, 2300ull << 20);
  // The config round-trips through config.json.
  absl::StatusOr<ModelConfig> parsed =
      ParseModelConfig(ModelConfigToJson(bench->config).dump(), "bench");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ModelConfigToJson(*parsed), ModelConfigToJson(bench->config));
  absl::StatusOr<CheckpointPreset> unknown = FindCheckpointPreset("huge");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()),
              ::testing::AllOf(::testing::HasSubstr("huge"), ::testing::HasSubstr("tiny")));
}

// make-checkpoint's tiny preset -> Checkpoint -> every tensor; then the BF16 cast -> every
// weight is bf16(fp8 * scale) exactly, everything else unchanged.
TEST(SyntheticCheckpointTest, TinyPresetRoundTripAndBf16Cast) {
  TempDir temp;
  const CheckpointPreset preset = *FindCheckpointPreset("tiny");
  const std::string fp8_dir = temp / "fp8";
  ASSERT_TRUE(WriteRandomCheckpoint(preset.config, 11, preset.default_shard_bytes, fp8_dir).ok());
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(kFixtureDir + "/" + file, fp8_dir + "/" + file);
  }
  absl::StatusOr<std::unique_ptr<Checkpoint>> fp8 = Checkpoint::Open(fp8_dir);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  ASSERT_TRUE((*fp8)->is_fp8());
  EXPECT_GE(ShardFiles(fp8_dir).size(), 3u);
  EXPECT_EQ(ModelConfigToJson((*fp8)->config()), ModelConfigToJson(preset.config));

  const std::string bf16_dir = temp / "bf16";
  ASSERT_TRUE(ConvertCheckpointToBf16(fp8_dir, bf16_dir).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> bf16 = Checkpoint::Open(bf16_dir);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_FALSE((*bf16)->is_fp8());
  const nlohmann::ordered_json bf16_config =
      nlohmann::ordered_json::parse(ReadFile(bf16_dir + "/config.json"));
  EXPECT_FALSE(bf16_config.contains("quantization_config"));
  nlohmann::ordered_json fp8_config =
      nlohmann::ordered_json::parse(ReadFile(fp8_dir + "/config.json"));
  fp8_config.erase("quantization_config");
  EXPECT_EQ(bf16_config, fp8_config);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_EQ(ReadFile(bf16_dir + "/" + file), ReadFile(fp8_dir + "/" + file)) << file;
  }
  for (const std::string& name : (*bf16)->TensorNames()) {
    EXPECT_EQ(name.find("weight_scale_inv"), std::string::npos) << name;
  }

  size_t linear_count = 0;
  std::set<std::string> expected_names;
  for (const TensorSpec& spec : CheckpointLayout(preset.config)) {
    SCOPED_TRACE(spec.name);
    expected_names.insert(spec.name);
    absl::StatusOr<const TensorInfo*> converted = (*bf16)->Find(spec.name);
    ASSERT_TRUE(converted.ok()) << converted.status();
    EXPECT_EQ((*converted)->shape, spec.shape);
    if (spec.kind == TensorSpec::Kind::kLinear) {
      ++linear_count;
      EXPECT_EQ((*converted)->dtype, DType::kBF16);
      absl::StatusOr<WeightMatrix> weight =
          (*fp8)->ReadWeight(PrefixOf(spec.name), spec.shape[0], spec.shape[1]);
      ASSERT_TRUE(weight.ok()) << weight.status();
      ASSERT_EQ(weight->format, WeightMatrix::Format::kFp8Block);
      absl::StatusOr<std::vector<float>> cast = (*bf16)->ReadFloat(spec.name, spec.shape);
      ASSERT_TRUE(cast.ok()) << cast.status();
      const int64_t cols = spec.shape[1];
      for (int64_t row = 0; row < spec.shape[0]; ++row) {
        for (int64_t col = 0; col < cols; ++col) {
          const float dequantized =
              Fp8E4M3ToFloat(weight->fp8[row * cols + col]) *
              weight->block_scales[(row / 128) * weight->scale_cols() + col / 128];
          ASSERT_EQ((*cast)[row * cols + col], BFloat16ToFloat(FloatToBFloat16(dequantized)))
              << row << "," << col;
        }
      }
      // Loaded through ReadWeight, a BF16 checkpoint gives float32 weights.
      absl::StatusOr<WeightMatrix> widened =
          (*bf16)->ReadWeight(PrefixOf(spec.name), spec.shape[0], spec.shape[1]);
      ASSERT_TRUE(widened.ok()) << widened.status();
      EXPECT_EQ(widened->format, WeightMatrix::Format::kFloat32);
    } else {
      EXPECT_EQ((*converted)->dtype,
                spec.kind == TensorSpec::Kind::kGateBias ? DType::kF32 : DType::kBF16);
      absl::StatusOr<std::vector<float>> original = (*fp8)->ReadFloat(spec.name, spec.shape);
      absl::StatusOr<std::vector<float>> copied = (*bf16)->ReadFloat(spec.name, spec.shape);
      ASSERT_TRUE(original.ok() && copied.ok());
      ASSERT_EQ(*original, *copied);
      for (float value : *original) ASSERT_TRUE(std::isfinite(value));
      if (spec.kind == TensorSpec::Kind::kNorm) {
        double sum = 0;
        for (float value : *original) sum += value;
        EXPECT_NEAR(sum / original->size(), 1.0, 0.1);
      }
    }
  }
  EXPECT_GT(linear_count, 100u);
  const std::vector<std::string> names = (*bf16)->TensorNames();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected_names);
  const nlohmann::json index =
      nlohmann::json::parse(ReadFile(bf16_dir + "/model.safetensors.index.json"));
  uint64_t data_bytes = 0;
  for (const std::string& shard : ShardFiles(bf16_dir)) {
    const std::string bytes = ReadFile(shard);
    data_bytes += bytes.size() - RawHeader(bytes).second;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), data_bytes);
}

TEST(Bf16CastTest, RefusesNonFp8InputAndNonEmptyOutput) {
  TempDir temp;
  ModelConfig config = MicroConfig();
  ASSERT_TRUE(WriteRandomCheckpoint(config, 2, 1 << 20, temp / "fp8").ok());
  ASSERT_TRUE(ConvertCheckpointToBf16(temp / "fp8", temp / "bf16").ok());
  EXPECT_EQ(ConvertCheckpointToBf16(temp / "bf16", temp / "again").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ConvertCheckpointToBf16(temp / "fp8", temp / "bf16").code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace moemesh::checkpoint
