#include "core/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/model/counter_rng.h"

namespace moemesh::model {
namespace {

// Descending logit order, ties by lower id: a strict total order, so any partial selection
// gives exactly the prefix a full sort would.
struct ByLogit {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    if (logits[a] != logits[b]) return logits[a] > logits[b];
    return a < b;
  }
};

// order[0, sorted) are the `sorted` best ids in order; extends the sorted prefix to at least
// `wanted` ids (chunks grow 4x, each an nth_element over the rest and a sort of the chunk).
void ExtendSorted(std::vector<int32_t>& order, size_t* sorted, size_t wanted, ByLogit by_logit) {
  if (wanted <= *sorted) return;
  size_t next = std::min(order.size(), std::max({wanted, *sorted * 4, size_t{64}}));
  if (next < order.size()) {
    std::nth_element(order.begin() + static_cast<std::ptrdiff_t>(*sorted),
                     order.begin() + static_cast<std::ptrdiff_t>(next), order.end(), by_logit);
  }
  std::sort(order.begin() + static_cast<std::ptrdiff_t>(*sorted),
            order.begin() + static_cast<std::ptrdiff_t>(next), by_logit);
  *sorted = next;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab) {
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
  for (const auto& [token, bias] : params.logit_bias) {
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias for token ", token, " must be in [-100, 100], got ", bias));
    }
    if (token < 0 || (vocab > 0 && token >= vocab)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias token ", token, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (params.min_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("min_tokens must be >= 0, got ", params.min_tokens));
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

const float* Sampler::Adjusted(const float* logits, int64_t vocab) {
  const bool suppress = sampled_ < params_.min_tokens && !params_.min_tokens_suppressed.empty();
  if (params_.logit_bias.empty() && !suppress) return logits;
  scratch_.assign(logits, logits + vocab);
  for (const auto& [token, bias] : params_.logit_bias) {
    if (token >= 0 && token < vocab) scratch_[static_cast<size_t>(token)] += bias;
  }
  if (suppress) {
    for (int32_t token : params_.min_tokens_suppressed) {
      if (token >= 0 && token < vocab) {
        scratch_[static_cast<size_t>(token)] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  return scratch_.data();
}

int32_t Sampler::Sample(const float* raw_logits, int64_t vocab, int64_t position) {
  next_position_ = position + 1;
  const float* logits = Adjusted(raw_logits, vocab);
  ++sampled_;
  if (params_.temperature == 0.0) return Argmax(logits, vocab);
  // Candidates in descending logit order, cut by top-k, softmax at the temperature, then top-p.
  const ByLogit by_logit{logits};
  order_.resize(static_cast<size_t>(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  size_t sorted = 0;
  size_t keep = static_cast<size_t>(vocab);
  if (params_.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(params_.top_k));
  const bool limited = keep < static_cast<size_t>(vocab);
  if (limited) {
    // Exactly the top-k, in order (as a partial sort gives them).
    ExtendSorted(order_, &sorted, keep, by_logit);
    sorted = keep;
    order_.resize(keep);
  } else {
    ExtendSorted(order_, &sorted, 1, by_logit);
  }
  const double maximum = logits[order_[0]];
  // Softmax weights of the candidates; the sum over a top-k set runs in descending order.
  weights_.resize(order_.size());
  double sum = 0.0;
  if (limited) {
    for (size_t i = 0; i < order_.size(); ++i) {
      weights_[i] = std::exp((logits[order_[i]] - maximum) / params_.temperature);
      sum += weights_[i];
    }
  } else {
    for (int64_t id = 0; id < vocab; ++id) sum += std::exp((logits[id] - maximum) / params_.temperature);
  }
  auto probability = [&](size_t i) {
    ExtendSorted(order_, &sorted, i + 1, by_logit);
    return (limited ? weights_[i] : std::exp((logits[order_[i]] - maximum) / params_.temperature)) / sum;
  };
  // The nucleus: the shortest prefix whose probability reaches top_p. Over a top-k set the cut
  // runs even at top_p 1 (rounding may end it a few tokens early, as it always has); over the
  // whole vocabulary at top_p 1 there is no cut and nothing past the draw is ever ordered.
  size_t nucleus = order_.size();
  if (limited || params_.top_p < 1.0) {
    double cumulative = 0.0;
    for (size_t i = 0; i < order_.size(); ++i) {
      cumulative += probability(i);
      if (cumulative >= params_.top_p) {
        nucleus = i + 1;
        break;
      }
    }
  }
  double mass = 0.0;
  if (!limited && nucleus == order_.size()) {
    mass = 1.0;
  } else {
    for (size_t i = 0; i < nucleus; ++i) mass += probability(i);
  }
  const double draw = CounterUniform(seed_, static_cast<uint64_t>(position)) * mass;
  double running = 0.0;
  for (size_t i = 0; i < nucleus; ++i) {
    running += probability(i);
    if (draw < running) return order_[i];
  }
  ExtendSorted(order_, &sorted, nucleus, by_logit);
  return order_[nucleus - 1];
}

std::vector<std::pair<int32_t, float>> TopLogits(const float* logits, int64_t vocab, int count) {
  count = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(count, vocab)));
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), ByLogit{logits});
  std::vector<std::pair<int32_t, float>> top;
  for (int i = 0; i < count; ++i) top.emplace_back(order[i], logits[order[i]]);
  return top;
}

double LogSumExp(const float* logits, int64_t vocab) {
  const float maximum = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - maximum));
  return static_cast<double>(maximum) + std::log(sum);
}

float LogProbability(const float* logits, int64_t vocab, int32_t token) {
  return Logprob(logits, LogSumExp(logits, vocab), token);
}

}  // namespace moemesh::model
