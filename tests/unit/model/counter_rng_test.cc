// The counter-based generator behind sampling: Random123's known answers for Philox4x32-10,
// uniform draws that are a pure function of (seed, position, stream), roughly uniform and
// uncorrelated between neighbouring positions and seeds; and the Sampler built on it drawing
// a token that depends on its position, not on how many draws came before.
#include "core/model/counter_rng.h"

#include <cmath>
#include <set>
#include <vector>

#include "core/model/sampling.h"
#include "gtest/gtest.h"

namespace moemesh::model {
namespace {

TEST(CounterRngTest, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(CounterRngTest, DeterministicPerSeedPositionAndStream) {
  EXPECT_EQ(CounterUniform(42, 7), CounterUniform(42, 7));
  EXPECT_EQ(CounterUniform(42, 7, 0), CounterUniform(42, 7));
  EXPECT_NE(CounterUniform(42, 7), CounterUniform(42, 8));
  EXPECT_NE(CounterUniform(42, 7), CounterUniform(43, 7));
  EXPECT_NE(CounterUniform(42, 7, 0), CounterUniform(42, 7, 1));
  // High bits of seed and position matter too.
  EXPECT_NE(CounterUniform(1, 5), CounterUniform(1 + (uint64_t{1} << 40), 5));
  EXPECT_NE(CounterUniform(1, 5), CounterUniform(1, 5 + (uint64_t{1} << 40)));
  // Evaluating other positions in between changes nothing (no hidden state).
  const double before = CounterUniform(9, 1000);
  for (uint64_t p = 0; p < 100; ++p) CounterUniform(9, p);
  EXPECT_EQ(CounterUniform(9, 1000), before);
}

TEST(CounterRngTest, UniformOverPositions) {
  const int n = 100000;
  const int bins = 10;
  std::vector<int> counts(bins, 0);
  double sum = 0, sum_squares = 0;
  for (int p = 0; p < n; ++p) {
    const double u = CounterUniform(12345, static_cast<uint64_t>(p));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_squares += u * u;
    ++counts[static_cast<int>(u * bins)];
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum_squares / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
  // Chi-square with 9 degrees of freedom: 27.9 is its 0.999 quantile.
  double chi2 = 0;
  for (int c : counts) chi2 += (c - n / bins) * (c - n / bins) / static_cast<double>(n / bins);
  EXPECT_LT(chi2, 27.9);
}

TEST(CounterRngTest, NeighbouringPositionsAndSeedsUncorrelated) {
  const int n = 50000;
  auto correlation = [n](auto first, auto second) {
    double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; ++i) {
      const double a = first(i), b = second(i);
      sa += a, sb += b, sab += a * b, saa += a * a, sbb += b * b;
    }
    const double cov = sab / n - (sa / n) * (sb / n);
    return cov / std::sqrt((saa / n - (sa / n) * (sa / n)) * (sbb / n - (sb / n) * (sb / n)));
  };
  // Lag-1 over positions of one seed, and the same position of consecutive seeds: |r| ~ 1/sqrt(n).
  EXPECT_LT(std::abs(correlation([](int i) { return CounterUniform(7, i); },
                                 [](int i) { return CounterUniform(7, i + 1); })),
            0.02);
  EXPECT_LT(std::abs(correlation([](int i) { return CounterUniform(i, 3); },
                                 [](int i) { return CounterUniform(i + 1, 3); })),
            0.02);
  std::set<double> distinct;
  for (int i = 0; i < 1000; ++i) distinct.insert(CounterUniform(0, i));
  EXPECT_EQ(distinct.size(), 1000u);
}

TEST(CounterRngTest, SamplerDrawDependsOnlyOnSeedAndPosition) {
  // Flat logits over 64 tokens: the token drawn is floor(u * 64) of the position's uniform.
  std::vector<float> logits(64, 0.0f);
  const SamplingParams params{.temperature = 1.0, .top_p = 1.0, .top_k = 0, .seed = 2024};
  Sampler in_order(params);
  std::vector<int32_t> tokens;
  for (int64_t position = 10; position < 60; ++position) {
    tokens.push_back(in_order.Sample(logits.data(), 64, position));
  }
  // Another sampler asked only for some positions, out of order, gets the same tokens there.
  Sampler sparse(params);
  for (int64_t position : {57, 10, 33, 33, 41}) {
    EXPECT_EQ(sparse.Sample(logits.data(), 64, position), tokens[position - 10]) << position;
  }
  for (int64_t position = 10; position < 60; ++position) {
    EXPECT_EQ(tokens[position - 10],
              static_cast<int32_t>(CounterUniform(2024, static_cast<uint64_t>(position)) * 64))
        << position;
  }
  // Not constant: a flat distribution over 64 tokens gives many distinct ones in 50 draws.
  EXPECT_GT(std::set<int32_t>(tokens.begin(), tokens.end()).size(), 20u);
  // The position-less call continues after the last position drawn.
  Sampler continuing(params);
  continuing.Sample(logits.data(), 64, 20);
  EXPECT_EQ(continuing.Sample(logits.data(), 64), tokens[21 - 10]);
}

}  // namespace
}  // namespace moemesh::model
