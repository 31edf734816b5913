#include "core/model/sampling.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace moemesh::model {
namespace {

std::vector<float> ExampleLogits() { return {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f}; }

TEST(SamplingTest, GreedyTakesFirstMaximum) {
  Sampler sampler(SamplingParams{});
  auto logits = ExampleLogits();
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 1);
}

TEST(SamplingTest, SameSeedSameTokens) {
  SamplingParams params{.temperature = 1.0, .top_p = 1.0, .top_k = 0, .seed = 1234};
  auto logits = ExampleLogits();
  Sampler first(params), second(params);
  std::vector<int32_t> a, b;
  for (int i = 0; i < 200; ++i) {
    a.push_back(first.Sample(logits.data(), logits.size()));
    b.push_back(second.Sample(logits.data(), logits.size()));
  }
  EXPECT_EQ(a, b);
  Sampler other({.temperature = 1.0, .top_p = 1.0, .top_k = 0, .seed = 99});
  std::vector<int32_t> c;
  for (int i = 0; i < 200; ++i) c.push_back(other.Sample(logits.data(), logits.size()));
  EXPECT_NE(a, c);
}

TEST(SamplingTest, TopKLimitsCandidates) {
  auto logits = ExampleLogits();
  Sampler sampler({.temperature = 5.0, .top_p = 1.0, .top_k = 2, .seed = 7});
  for (int i = 0; i < 500; ++i) {
    const int32_t token = sampler.Sample(logits.data(), logits.size());
    EXPECT_TRUE(token == 1 || token == 4) << token;
  }
}

TEST(SamplingTest, TopPKeepsNucleusOnly) {
  // Probabilities at temperature 1: token 0 dominates with ~0.84 of the mass.
  std::vector<float> logits = {5.0f, 3.0f, 2.0f, 1.0f};
  Sampler sampler({.temperature = 1.0, .top_p = 0.8, .top_k = 0, .seed = 3});
  for (int i = 0; i < 300; ++i) EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 0);
  Sampler wider({.temperature = 1.0, .top_p = 0.95, .top_k = 0, .seed = 3});
  std::map<int32_t, int> counts;
  for (int i = 0; i < 2000; ++i) ++counts[wider.Sample(logits.data(), logits.size())];
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplingTest, TemperatureFollowsSoftmax) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  Sampler sampler({.temperature = 1.0, .top_p = 1.0, .top_k = 0, .seed = 11});
  int ones = 0;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ones += sampler.Sample(logits.data(), logits.size());
  EXPECT_NEAR(static_cast<double>(ones) / draws, 0.75, 0.02);
}

TEST(SamplingTest, ValidationNamesTheParameter) {
  EXPECT_NE(ValidateSamplingParams({.temperature = -1}).message().find("temperature"),
            std::string::npos);
  EXPECT_NE(ValidateSamplingParams({.top_p = 0}).message().find("top_p"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams({.top_k = -5}).message().find("top_k"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingParams({.temperature = 0.7, .top_p = 0.9, .top_k = 40}).ok());
}

TEST(SamplingTest, TopLogitsAndLogProbability) {
  auto logits = ExampleLogits();
  auto top = TopLogits(logits.data(), logits.size(), 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 4);
  EXPECT_EQ(top[2].first, 2);
  double total = 0;
  for (int i = 0; i < 6; ++i) total += std::exp(LogProbability(logits.data(), 6, i));
  EXPECT_NEAR(total, 1.0, 1e-6);
}

}  // namespace
}  // namespace moemesh::model
