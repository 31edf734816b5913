// make-checkpoint's gate skew (WriteRandomCheckpoint gate_skew): the model's own gate, run on
// random hidden rows, sends a far larger share of rows to the hottest expert than uniform, the
// hottest expert is the one the skew ranks first, and it differs between layers.
#include <algorithm>
#include <filesystem>
#include <random>
#include <set>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "core/model/deepseek_model.h"
#include "gtest/gtest.h"

namespace moemesh::model {
namespace {

namespace fs = std::filesystem;

struct LayerRouting {
  int hottest = -1;
  double hottest_share = 0;  // fraction of rows whose top-k includes the hottest expert
};

// Writes the tiny shape (small vocabulary, 3 MoE layers) with `gate_skew` and routes 512 random
// unit-variance rows through each MoE layer's gate.
std::vector<LayerRouting> Route(double gate_skew, const std::string& name,
                                checkpoint::ModelConfig* config_out = nullptr) {
  checkpoint::ModelConfig config = checkpoint::FindCheckpointPreset("tiny")->config;
  config.vocab_size = 512;
  config.num_hidden_layers = 4;  // layer 0 dense, 1..3 MoE
  const fs::path directory = fs::path(::testing::TempDir()) / ("gate_skew_" + name);
  fs::remove_all(directory);
  EXPECT_TRUE(checkpoint::WriteRandomCheckpoint(config, 7, 8 << 20, directory.string(), gate_skew)
                  .ok());
  absl::StatusOr<std::unique_ptr<checkpoint::Checkpoint>> checkpoint =
      checkpoint::Checkpoint::Open(directory.string());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<std::unique_ptr<DeepseekModel>> model = DeepseekModel::Load(**checkpoint);
  EXPECT_TRUE(model.ok()) << model.status();
  constexpr int kRows = 512;
  std::mt19937_64 engine(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> rows(static_cast<size_t>(kRows) * config.hidden_size);
  for (float& v : rows) v = normal(engine);
  std::vector<LayerRouting> routing;
  for (int layer = 1; layer <= 3; ++layer) {
    const GateDecision decision = (*model)->Gate(layer, rows.data(), kRows);
    std::vector<int> chosen(config.n_routed_experts, 0);
    for (int32_t expert : decision.experts) ++chosen[expert];
    const auto top = std::max_element(chosen.begin(), chosen.end());
    routing.push_back(LayerRouting{static_cast<int>(top - chosen.begin()),
                                   static_cast<double>(*top) / kRows});
  }
  fs::remove_all(directory);
  if (config_out != nullptr) *config_out = config;
  return routing;
}

TEST(GateSkewTest, SkewedCheckpointRoutesMostRowsToAHotExpertThatDiffersByLayer) {
  checkpoint::ModelConfig config;
  const std::vector<LayerRouting> skewed = Route(1.0, "skewed", &config);
  const std::vector<LayerRouting> plain = Route(0.0, "plain");
  ASSERT_EQ(skewed.size(), 3u);
  const double uniform =
      static_cast<double>(config.num_experts_per_tok) / config.n_routed_experts;  // 0.25
  std::set<int> hottest;
  for (int i = 0; i < 3; ++i) {
    const int layer = i + 1;
    EXPECT_GT(skewed[i].hottest_share, 3 * uniform) << "layer " << layer;
    EXPECT_GT(skewed[i].hottest_share, plain[i].hottest_share + 0.2) << "layer " << layer;
    // The hottest is the expert the skew ranks first in this layer.
    const std::vector<float> bias = checkpoint::GateSkewBias(
        config.n_routed_experts, 7,
        "model.layers." + std::to_string(layer) + ".mlp.gate.e_score_correction_bias", 1.0);
    EXPECT_EQ(skewed[i].hottest,
              static_cast<int>(std::max_element(bias.begin(), bias.end()) - bias.begin()))
        << "layer " << layer;
    hottest.insert(skewed[i].hottest);
  }
  EXPECT_GE(hottest.size(), 2u) << "the same expert is hottest in every layer";
}

TEST(GateSkewTest, SkewIsDeterministicAndZeroAddsNothing) {
  const std::string name = "model.layers.1.mlp.gate.e_score_correction_bias";
  EXPECT_EQ(checkpoint::GateSkewBias(16, 3, name, 0.5), checkpoint::GateSkewBias(16, 3, name, 0.5));
  EXPECT_NE(checkpoint::GateSkewBias(16, 3, name, 0.5), checkpoint::GateSkewBias(16, 4, name, 0.5));
  EXPECT_EQ(checkpoint::GateSkewBias(16, 3, name, 0.0), std::vector<float>(16, 0.0f));
  std::vector<float> bias = checkpoint::GateSkewBias(16, 3, name, 0.5);
  std::sort(bias.rbegin(), bias.rend());
  EXPECT_FLOAT_EQ(bias[0], 0.5f);
  EXPECT_FLOAT_EQ(bias[1], 0.25f);
  EXPECT_FLOAT_EQ(bias[15], 0.5f / 16);
  EXPECT_FALSE(checkpoint::WriteRandomCheckpoint(checkpoint::FindCheckpointPreset("tiny")->config,
                                                 1, 1 << 20, ::testing::TempDir() + "never", -1)
                   .ok());
}

}  // namespace
}  // namespace moemesh::model
