// Next-token sampling from logits: greedy, temperature, top-k, top-p, seeded.
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
};

// InvalidArgument naming the field when a value is out of range (temperature < 0, top_p outside
// (0, 1], top_k < -1).
absl::Status ValidateSamplingParams(const SamplingParams& params);

// One sequence's sampler. Its random draw for a token depends only on (seed, position)
// (counter_rng.h), so a replayed or rescheduled sequence samples the same tokens; without a
// seed, one is chosen at construction.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from logits [vocab] as the token at absolute `position` of the sequence
  // (prompt tokens count). Greedy takes the first maximum.
  int32_t Sample(const float* logits, int64_t vocab, int64_t position);
  // The same at the position after the previous call's (0 for the first call).
  int32_t Sample(const float* logits, int64_t vocab) { return Sample(logits, vocab, next_position_); }

 private:
  SamplingParams params_;
  uint64_t seed_;
  int64_t next_position_ = 0;
};

// The `count` largest logits as (token id, logit), largest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> TopLogits(const float* logits, int64_t vocab, int count);

// Index of the largest logit (first on ties).
int32_t Argmax(const float* logits, int64_t vocab);

// log-softmax of logits [vocab] at `token` (for logprobs).
float LogProbability(const float* logits, int64_t vocab, int32_t token);

}  // namespace moemesh::model
