// The single-process engine against DeepSeek's own inference/model.py outputs
// (../shared/goldens/tiny-r1.json), with the tolerances of ../shared/README.md.
#include <cmath>
#include <set>
#include <vector>

#include "core/model/generator.h"
#include "core/model/sampling.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh {
namespace {

using nlohmann::json;

constexpr double kLogitTolerance = 1e-3;
constexpr double kGateWeightTolerance = 1e-4;
constexpr double kGateMarginFloor = 1e-5;

std::vector<int32_t> Ids(const json& prompt) { return prompt["ids"].get<std::vector<int32_t>>(); }

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    loaded_ = new testing::LoadedModel(testing::LoadModelOrDie(testing::FixtureDir()));
  }
  static void TearDownTestSuite() {
    delete loaded_;
    loaded_ = nullptr;
  }
  static testing::LoadedModel* loaded_;
};
testing::LoadedModel* GoldenTest::loaded_ = nullptr;

// Greedy tokens against the golden continuation: a differing token is accepted only where the
// reference's own top-2 margin is within tolerance (then later steps are not compared).
void ExpectGreedyMatches(const json& prompt, const std::vector<int32_t>& generated) {
  const auto golden = prompt["greedy"].get<std::vector<int32_t>>();
  ASSERT_EQ(generated.size(), golden.size()) << prompt["name"];
  for (size_t step = 0; step < golden.size(); ++step) {
    if (generated[step] == golden[step]) continue;
    const json& top = step == 0 ? prompt["prefill_top"] : prompt["decode_top"][step - 1];
    const double margin = top[0][1].get<double>() - top[1][1].get<double>();
    EXPECT_LT(margin, kLogitTolerance)
        << prompt["name"] << " step " << step << ": got " << generated[step] << ", reference "
        << golden[step] << " with margin " << margin;
    return;
  }
}

TEST_F(GoldenTest, PrefillTopLogitsOfEveryPrompt) {
  const auto& model = *loaded_->model;
  for (const json& prompt : testing::TinyR1Goldens()["results"]) {
    model::LatentCache cache = model.NewCache();
    const std::vector<int32_t> ids = Ids(prompt);
    model::SequenceStep step{&cache, ids};
    auto logits = loaded_->model->Forward({&step, 1}, *loaded_->experts);
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (const json& entry : prompt["prefill_top"]) {
      const int32_t token = entry[0].get<int32_t>();
      EXPECT_NEAR((*logits)[token], entry[1].get<double>(), kLogitTolerance)
          << prompt["name"] << " token " << token;
    }
  }
}

TEST_F(GoldenTest, FirstPromptFullLogitsHiddenStatesAndGates) {
  const json& prompt = testing::TinyR1Goldens()["results"][0];
  auto& model = *loaded_->model;
  model::LatentCache cache = model.NewCache();
  const std::vector<int32_t> ids = Ids(prompt);
  model::SequenceStep step{&cache, ids};
  model::ForwardTrace trace;
  auto logits = model.Forward({&step, 1}, *loaded_->experts, &trace);
  ASSERT_TRUE(logits.ok()) << logits.status();

  const auto golden_logits = prompt["prefill_logits"].get<std::vector<double>>();
  ASSERT_EQ(golden_logits.size(), logits->size());
  int mismatches = 0;
  for (size_t i = 0; i < golden_logits.size(); ++i) {
    if (std::fabs((*logits)[i] - golden_logits[i]) > kLogitTolerance && ++mismatches <= 5) {
      ADD_FAILURE() << "logit " << i << ": " << (*logits)[i] << " vs " << golden_logits[i];
    }
  }
  EXPECT_EQ(mismatches, 0);

  const json& hidden = prompt["hidden_per_layer"];
  ASSERT_EQ(hidden.size(), trace.layer_outputs.size());
  const int hidden_size = model.config().hidden_size;
  for (size_t layer = 0; layer < hidden.size(); ++layer) {
    ASSERT_EQ(hidden[layer].size(), ids.size());
    for (size_t position = 0; position < ids.size(); ++position) {
      for (int i = 0; i < hidden_size; ++i) {
        const double expected = hidden[layer][position][i].get<double>();
        const double actual = trace.layer_outputs[layer][position * hidden_size + i];
        ASSERT_NEAR(actual, expected, kLogitTolerance * std::max(1.0, std::fabs(expected)))
            << "layer " << layer << " position " << position << " element " << i;
      }
    }
  }
}

TEST_F(GoldenTest, GateChoicesAndWeightsForEveryPromptLayerAndPosition) {
  auto& model = *loaded_->model;
  int compared = 0;
  for (const json& prompt : testing::TinyR1Goldens()["results"]) {
    model::LatentCache cache = model.NewCache();
    const std::vector<int32_t> ids = Ids(prompt);
    model::SequenceStep step{&cache, ids};
    model::ForwardTrace trace;
    ASSERT_TRUE(model.Forward({&step, 1}, *loaded_->experts, &trace).ok());
    const json& gates = prompt["gates"];
    ASSERT_EQ(gates.size(), trace.gates.size()) << prompt["name"];
    for (size_t g = 0; g < gates.size(); ++g) {
      const auto& [layer, decision] = trace.gates[g];
      ASSERT_EQ(gates[g]["layer"].get<int>(), layer);
      for (size_t position = 0; position < ids.size(); ++position) {
        const auto golden_experts = gates[g]["experts"][position].get<std::vector<int>>();
        const auto golden_weights = gates[g]["weights"][position].get<std::vector<double>>();
        const double margin = gates[g]["margins"][position].get<double>();
        if (margin <= kGateMarginFloor) continue;
        ++compared;
        const int top_k = decision.top_k;
        std::set<int> ours(decision.experts.begin() + position * top_k,
                           decision.experts.begin() + (position + 1) * top_k);
        ASSERT_EQ(ours, std::set<int>(golden_experts.begin(), golden_experts.end()))
            << prompt["name"] << " layer " << layer << " position " << position;
        for (int k = 0; k < top_k; ++k) {
          const int expert = golden_experts[k];
          for (int j = 0; j < top_k; ++j) {
            if (decision.experts[position * top_k + j] != expert) continue;
            EXPECT_NEAR(decision.weights[position * top_k + j], golden_weights[k],
                        kGateWeightTolerance)
                << prompt["name"] << " layer " << layer << " position " << position;
          }
        }
      }
    }
  }
  EXPECT_GT(compared, 700);
}

TEST_F(GoldenTest, GreedyContinuationOfEveryPrompt) {
  for (const json& prompt : testing::TinyR1Goldens()["results"]) {
    model::GenerationRequest request;
    request.prompt = Ids(prompt);
    request.max_new_tokens = static_cast<int>(prompt["greedy"].size());
    request.stop_at_eos = false;
    auto results = model::Generate(*loaded_->model, *loaded_->experts, {&request, 1});
    ASSERT_TRUE(results.ok()) << results.status();
    ExpectGreedyMatches(prompt, (*results)[0].generated);
  }
}

TEST_F(GoldenTest, DecodeTopLogitsAlongTheReferenceContinuation) {
  // Feed the reference's own tokens so every step is compared, even past a near-tie.
  auto& model = *loaded_->model;
  const int64_t vocab = model.config().vocab_size;
  for (const json& prompt : testing::TinyR1Goldens()["results"]) {
    model::LatentCache cache = model.NewCache();
    const std::vector<int32_t> ids = Ids(prompt);
    model::SequenceStep prefill{&cache, ids};
    ASSERT_TRUE(model.Forward({&prefill, 1}, *loaded_->experts).ok());
    const auto greedy = prompt["greedy"].get<std::vector<int32_t>>();
    for (size_t step = 0; step + 1 < greedy.size(); ++step) {
      model::SequenceStep decode{&cache, std::span<const int32_t>(&greedy[step], 1)};
      auto logits = model.Forward({&decode, 1}, *loaded_->experts);
      ASSERT_TRUE(logits.ok());
      ASSERT_EQ(logits->size(), static_cast<size_t>(vocab));
      for (const json& entry : prompt["decode_top"][step]) {
        EXPECT_NEAR((*logits)[entry[0].get<int32_t>()], entry[1].get<double>(), kLogitTolerance)
            << prompt["name"] << " decode step " << step;
      }
    }
  }
}

TEST_F(GoldenTest, AllPromptsInOneBatchMatchOneAtATime) {
  const json& prompts = testing::TinyR1Goldens()["results"];
  std::vector<model::GenerationRequest> requests;
  for (const json& prompt : prompts) {
    model::GenerationRequest request;
    request.prompt = Ids(prompt);
    request.max_new_tokens = static_cast<int>(prompt["greedy"].size());
    request.stop_at_eos = false;
    requests.push_back(request);
  }
  auto batched = model::Generate(*loaded_->model, *loaded_->experts, requests);
  ASSERT_TRUE(batched.ok()) << batched.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    auto single = model::Generate(*loaded_->model, *loaded_->experts, {&requests[i], 1});
    ASSERT_TRUE(single.ok());
    EXPECT_EQ((*batched)[i].generated, (*single)[0].generated) << prompts[i]["name"];
    ASSERT_EQ((*batched)[i].prefill_top.size(), (*single)[0].prefill_top.size());
    for (size_t j = 0; j < (*single)[0].prefill_top.size(); ++j) {
      EXPECT_EQ((*batched)[i].prefill_top[j].first, (*single)[0].prefill_top[j].first);
      EXPECT_NEAR((*batched)[i].prefill_top[j].second, (*single)[0].prefill_top[j].second, 1e-4);
    }
    ExpectGreedyMatches(prompts[i], (*batched)[i].generated);
  }
}

}  // namespace
}  // namespace moemesh
