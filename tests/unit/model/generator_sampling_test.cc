// logit_bias and min_tokens through the single-process engine (core/model/generator) on the
// tiny-r1 fixture: a bias moves a greedy token, min_tokens holds off EOS.
#include <vector>

#include "core/model/generator.h"
#include "core/model/sampling.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh {
namespace {

class GeneratorSamplingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    loaded_ = new testing::LoadedModel(testing::LoadModelOrDie(testing::FixtureDir()));
  }
  static void TearDownTestSuite() {
    delete loaded_;
    loaded_ = nullptr;
  }
  static std::vector<int32_t> Run(const model::GenerationRequest& request) {
    auto results = model::Generate(*loaded_->model, *loaded_->experts, {&request, 1});
    EXPECT_TRUE(results.ok()) << results.status();
    return results.ok() ? (*results)[0].generated : std::vector<int32_t>{};
  }
  static testing::LoadedModel* loaded_;
};
testing::LoadedModel* GeneratorSamplingTest::loaded_ = nullptr;

const std::vector<int32_t> kPrompt = {0, 128803, 19923, 2058, 128804};

TEST_F(GeneratorSamplingTest, LogitBiasChangesTheGreedyToken) {
  model::GenerationRequest request;
  request.prompt = kPrompt;
  request.max_new_tokens = 1;
  request.stop_at_eos = false;
  const int32_t greedy = Run(request)[0];
  const int32_t other = greedy == 100 ? 101 : 100;
  request.sampling.logit_bias = {{other, 100.0f}};
  EXPECT_EQ(Run(request)[0], other);
  request.sampling.logit_bias = {{greedy, -100.0f}};
  EXPECT_NE(Run(request)[0], greedy);
}

TEST_F(GeneratorSamplingTest, MinTokensHoldsOffEos) {
  const int32_t eos = loaded_->model->config().eos_token_id;
  model::GenerationRequest request;
  request.prompt = kPrompt;
  request.max_new_tokens = 10;
  request.sampling.logit_bias = {{eos, 100.0f}};  // EOS is every step's greedy token
  EXPECT_EQ(Run(request), std::vector<int32_t>{eos});
  request.sampling.min_tokens = 3;
  const std::vector<int32_t> held = Run(request);
  ASSERT_EQ(held.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_NE(held[static_cast<size_t>(i)], eos);
  EXPECT_EQ(held[3], eos);
}

TEST_F(GeneratorSamplingTest, BadLogitBiasIsRefused) {
  model::GenerationRequest request;
  request.prompt = kPrompt;
  request.sampling.logit_bias = {{1 << 30, 1.0f}};
  EXPECT_FALSE(model::Generate(*loaded_->model, *loaded_->experts, {&request, 1}).ok());
  request.sampling.logit_bias = {{5, 101.0f}};
  EXPECT_FALSE(model::Generate(*loaded_->model, *loaded_->experts, {&request, 1}).ok());
}

}  // namespace
}  // namespace moemesh
