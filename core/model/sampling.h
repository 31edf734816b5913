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

// One sequence's sampler (it owns the sequence's random stream).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from logits [vocab]. Greedy takes the first maximum.
  int32_t Sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 generator_;
};

// The `count` largest logits as (token id, logit), largest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> TopLogits(const float* logits, int64_t vocab, int count);

// Index of the largest logit (first on ties).
int32_t Argmax(const float* logits, int64_t vocab);

// log-softmax of logits [vocab] at `token` (for logprobs).
float LogProbability(const float* logits, int64_t vocab, int32_t token);

}  // namespace moemesh::model
