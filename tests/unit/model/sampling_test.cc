#include "core/model/sampling.h"

#include "core/model/counter_rng.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "core/model/counter_rng.h"
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

// The sampler as it was before partial selection (a full sort per token): the new one must pick
// the same tokens from the same draws (the counter-based uniform at (seed, position)).
int32_t ReferenceSample(const SamplingParams& params, int64_t position, const float* logits,
                        int64_t vocab) {
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = vocab;
  if (params.top_k > 0) keep = std::min<int64_t>(keep, params.top_k);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  std::sort(order.begin(), order.end(), by_logit);
  order.resize(static_cast<size_t>(keep));
  std::vector<double> p(order.size());
  const double maximum = logits[order[0]];
  double sum = 0.0;
  for (size_t i = 0; i < order.size(); ++i) sum += p[i] = std::exp((logits[order[i]] - maximum) / params.temperature);
  size_t nucleus = order.size();
  double cumulative = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    p[i] /= sum;
    cumulative += p[i];
    if (cumulative >= params.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0.0;
  for (size_t i = 0; i < nucleus; ++i) mass += p[i];
  const double draw = CounterUniform(*params.seed, static_cast<uint64_t>(position)) * mass;
  double running = 0.0;
  for (size_t i = 0; i < nucleus; ++i) {
    running += p[i];
    if (draw < running) return order[i];
  }
  return order[nucleus - 1];
}

TEST(SamplingTest, PartialSelectionPicksWhatAFullSortPicked) {
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t vocab = 5000;
  std::vector<float> logits(static_cast<size_t>(vocab));
  const SamplingParams cases[] = {
      {.temperature = 1.0, .top_p = 1.0, .top_k = 40, .seed = 1},
      {.temperature = 0.7, .top_p = 0.9, .top_k = 0, .seed = 2},
      {.temperature = 1.3, .top_p = 0.5, .top_k = 100, .seed = 3},
      {.temperature = 1.0, .top_p = 0.99, .top_k = 0, .seed = 4},
      {.temperature = 1.0, .top_p = 1.0, .top_k = 0, .seed = 5},
  };
  for (const SamplingParams& params : cases) {
    Sampler sampler(params);
    for (int step = 0; step < 200; ++step) {
      for (float& x : logits) x = normal(random);
      logits[static_cast<size_t>(step) % 7] = logits[3];  // ties
      EXPECT_EQ(sampler.Sample(logits.data(), vocab),
                ReferenceSample(params, step, logits.data(), vocab))
          << "top_k " << params.top_k << " top_p " << params.top_p << " step " << step;
    }
  }
}

TEST(SamplingTest, LogitBiasMovesTheGreedyToken) {
  auto logits = ExampleLogits();
  SamplingParams params;
  params.logit_bias = {{3, 5.0f}};  // -1 + 5 = 4 > 3
  Sampler sampler(params);
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 3);
  params.logit_bias = {{1, -100.0f}};
  Sampler down(params);
  EXPECT_EQ(down.Sample(logits.data(), logits.size()), 4);
  EXPECT_EQ(logits, ExampleLogits());  // the caller's logits are untouched
}

TEST(SamplingTest, MinTokensSuppressesStopIdsUntilReached) {
  auto logits = ExampleLogits();
  SamplingParams params;
  params.min_tokens = 2;
  params.min_tokens_suppressed = {1, 4};  // the two maxima
  Sampler sampler(params);
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 2);
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 2);
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size()), 1);
  EXPECT_EQ(sampler.sampled(), 3);
}

TEST(SamplingTest, LogitBiasValidation) {
  SamplingParams params;
  params.logit_bias = {{2, 100.5f}};
  EXPECT_NE(ValidateSamplingParams(params).message().find("logit_bias"), std::string::npos);
  params.logit_bias = {{7, 1.0f}};
  EXPECT_FALSE(ValidateSamplingParams(params, 6).ok());
  EXPECT_TRUE(ValidateSamplingParams(params, 8).ok());
}

TEST(SamplingTest, LogprobOfATokenIsOneValue) {
  std::mt19937 random(9);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> logits(129280);
  for (float& x : logits) x = normal(random);
  const double normalizer = LogSumExp(logits.data(), logits.size());
  for (const auto& [id, logit] : TopLogits(logits.data(), logits.size(), 5)) {
    EXPECT_EQ(Logprob(logits.data(), normalizer, id),
              LogProbability(logits.data(), logits.size(), id));
  }
}

}  // namespace
}  // namespace moemesh::model
