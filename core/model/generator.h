// Batch generation in one process: prefill every prompt in one step, then decode all live
// sequences together, one token each per step (the reference the cluster must match).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/deepseek_model.h"
#include "core/model/routed_experts.h"
#include "core/model/sampling.h"

namespace moemesh::model {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;  // logit_bias and min_tokens included (min_tokens holds off EOS)
  bool stop_at_eos = true;  // stop after emitting config.eos_token_id
};

struct GenerationResult {
  std::vector<int32_t> generated;
  // Top `prefill_top_count` (token, logit) at the last prompt position.
  std::vector<std::pair<int32_t, float>> prefill_top;
};

// Errors: empty prompt, invalid sampling parameters (naming them), or model failures.
absl::StatusOr<std::vector<GenerationResult>> Generate(DeepseekModel& model,
                                                       RoutedExperts& routed_experts,
                                                       std::span<const GenerationRequest> requests,
                                                       int prefill_top_count = 20);

}  // namespace moemesh::model
