#include "core/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/model/counter_rng.h"

namespace moemesh::model {

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!(params.temperature >= 0.0) || !std::isfinite(params.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0, got ", params.temperature));
  }
  if (!(params.top_p > 0.0 && params.top_p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", params.top_p));
  }
  if (params.top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be -1, 0 (no limit) or positive, got ", params.top_k));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params),
      seed_(params.seed.has_value()
                ? *params.seed
                : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()) {}

int32_t Argmax(const float* logits, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, int64_t position) {
  next_position_ = position + 1;
  if (params_.temperature == 0.0) return Argmax(logits, vocab);
  // Candidates sorted by logit, cut by top-k, then softmax at the temperature, then top-p.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = vocab;
  if (params_.top_k > 0) keep = std::min<int64_t>(keep, params_.top_k);
  auto by_logit = [&](int32_t a, int32_t b) {
    if (logits[a] != logits[b]) return logits[a] > logits[b];
    return a < b;
  };
  if (keep < vocab) {
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  order.resize(static_cast<size_t>(keep));
  std::vector<double> probabilities(order.size());
  const double maximum = logits[order[0]];
  double sum = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    probabilities[i] = std::exp((logits[order[i]] - maximum) / params_.temperature);
    sum += probabilities[i];
  }
  size_t nucleus = order.size();
  double cumulative = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    probabilities[i] /= sum;
    cumulative += probabilities[i];
    if (cumulative >= params_.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0.0;
  for (size_t i = 0; i < nucleus; ++i) mass += probabilities[i];
  const double draw = CounterUniform(seed_, static_cast<uint64_t>(position)) * mass;
  double running = 0.0;
  for (size_t i = 0; i < nucleus; ++i) {
    running += probabilities[i];
    if (draw < running) return order[i];
  }
  return order[nucleus - 1];
}

std::vector<std::pair<int32_t, float>> TopLogits(const float* logits, int64_t vocab, int count) {
  count = static_cast<int>(std::min<int64_t>(count, vocab));
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int32_t a, int32_t b) {
    if (logits[a] != logits[b]) return logits[a] > logits[b];
    return a < b;
  });
  std::vector<std::pair<int32_t, float>> top;
  for (int i = 0; i < count; ++i) top.emplace_back(order[i], logits[order[i]]);
  return top;
}

float LogProbability(const float* logits, int64_t vocab, int32_t token) {
  const float maximum = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - maximum));
  return static_cast<float>(logits[token] - maximum - std::log(sum));
}

}  // namespace moemesh::model
