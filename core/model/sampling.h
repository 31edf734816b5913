// Next-token sampling from logits: greedy, temperature, top-k, top-p, seeded; logit_bias and
// min_tokens (OpenAI / vLLM semantics); logprobs.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace moemesh::model {

// OpenAI/vLLM conventions: temperature 0 means greedy; top_k 0 (or -1) means no limit; top_p 1
// means no nucleus cut. With a seed, the same logits give the same tokens on every run.
struct SamplingParams {
  double temperature = 0.0;
  double top_p = 1.0;
  int top_k = 0;
  std::optional<uint64_t> seed;
  // (token, bias) added to the logits before any choice (greedy too), bias in [-100, 100].
  std::vector<std::pair<int32_t, float>> logit_bias;
  // The tokens of `min_tokens_suppressed` (EOS and the stop ids) cannot be chosen before this
  // many tokens were sampled by this sampler.
  int64_t min_tokens = 0;
  std::vector<int32_t> min_tokens_suppressed;
};

// InvalidArgument naming the field when a value is out of range (temperature < 0, top_p outside
// (0, 1], top_k < -1, a logit_bias value outside [-100, 100] or, when `vocab` > 0, a logit_bias
// token outside [0, vocab)).
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab = 0);

// One sequence's sampler. Its random draw for a token depends only on (seed, position)
// (counter_rng.h), so a replayed or rescheduled sequence samples the same tokens; without a
// seed, one is chosen at construction.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from logits [vocab] after logit_bias and min_tokens, as the token at absolute
  // `position` of the sequence (prompt tokens count). Greedy takes the first maximum.
  // Candidates are selected partially (never a sort of the whole vocabulary): top-k keeps k,
  // top-p walks the candidates in descending order only as far as the nucleus.
  int32_t Sample(const float* logits, int64_t vocab, int64_t position);
  // The same at the position after the previous call's (0 for the first call).
  int32_t Sample(const float* logits, int64_t vocab) { return Sample(logits, vocab, next_position_); }
  // Tokens sampled so far.
  int64_t sampled() const { return sampled_; }

 private:
  // The logits sampling sees: `logits` itself, or scratch_ with the bias and suppression.
  const float* Adjusted(const float* logits, int64_t vocab);

  SamplingParams params_;
  uint64_t seed_;
  int64_t next_position_ = 0;
  int64_t sampled_ = 0;
  std::vector<float> scratch_;
  std::vector<int32_t> order_;
  std::vector<double> weights_;
};

// The `count` largest logits as (token id, logit), largest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> TopLogits(const float* logits, int64_t vocab, int count);

// Index of the largest logit (first on ties).
int32_t Argmax(const float* logits, int64_t vocab);

// log(sum(exp(logits))) of logits [vocab], in double: the log-softmax normalizer.
double LogSumExp(const float* logits, int64_t vocab);
// log-softmax of `token` given LogSumExp's `normalizer`. Every logprob of one step (the sampled
// token's and the top alternatives') comes from this one expression, so equal tokens get
// bit-equal values.
inline float Logprob(const float* logits, double normalizer, int32_t token) {
  return static_cast<float>(static_cast<double>(logits[token]) - normalizer);
}
// log-softmax of logits [vocab] at `token` (Logprob(logits, LogSumExp(logits, vocab), token)).
float LogProbability(const float* logits, int64_t vocab, int32_t token);

}  // namespace moemesh::model
