#include "core/model/generator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moemesh::model {

absl::StatusOr<std::vector<GenerationResult>> Generate(
    DeepseekModel& model, RoutedExperts& routed_experts,
    std::span<const GenerationRequest> requests, int prefill_top_count, int64_t max_step_tokens) {
  if (max_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_tokens must be at least 1, got ", max_step_tokens));
  }
  const int64_t vocab = model.config().vocab_size;
  std::vector<LatentCache> caches;
  std::vector<Sampler> samplers;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].prompt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " is empty"));
    }
    SamplingParams sampling = requests[i].sampling;
    // min_tokens holds off EOS when EOS would stop the sequence.
    if (requests[i].stop_at_eos) sampling.min_tokens_suppressed.push_back(model.config().eos_token_id);
    RETURN_IF_ERROR(ValidateSamplingParams(sampling, vocab));
    caches.push_back(model.NewCache());
    samplers.emplace_back(sampling);
  }
  std::vector<GenerationResult> results(requests.size());
  std::vector<int32_t> next_token(requests.size());
  std::vector<bool> live(requests.size(), false);

  auto take = [&](size_t i, const float* row) {
    // Drawn at its absolute position in the sequence (prompt + tokens generated before it).
    const int64_t position =
        static_cast<int64_t>(requests[i].prompt.size() + results[i].generated.size());
    const int32_t token = samplers[i].Sample(row, vocab, position);
    results[i].generated.push_back(token);
    next_token[i] = token;
    const bool eos = requests[i].stop_at_eos && token == model.config().eos_token_id;
    live[i] = !eos && static_cast<int>(results[i].generated.size()) < requests[i].max_new_tokens;
  };
  // Prefill: prompts in order, each step filled up to the budget with the next chunks.
  std::vector<int64_t> prefilled(requests.size(), 0);
  size_t first_pending = 0;
  while (first_pending < requests.size()) {
    std::vector<SequenceStep> prefill;
    std::vector<size_t> which;
    int64_t budget = max_step_tokens;
    for (size_t i = first_pending; i < requests.size() && budget > 0; ++i) {
      const int64_t remaining = static_cast<int64_t>(requests[i].prompt.size()) - prefilled[i];
      const int64_t chunk = std::min(remaining, budget);
      prefill.push_back({&caches[i],
                         std::span<const int32_t>(requests[i].prompt).subspan(prefilled[i], chunk),
                         chunk == remaining});
      which.push_back(i);
      budget -= chunk;
    }
    ASSIGN_OR_RETURN(std::vector<float> logits, model.Forward(prefill, routed_experts));
    for (size_t j = 0; j < which.size(); ++j) {
      const size_t i = which[j];
      prefilled[i] += static_cast<int64_t>(prefill[j].tokens.size());
      if (!prefill[j].wants_logits) continue;
      const float* row = logits.data() + j * vocab;
      results[i].prefill_top = TopLogits(row, vocab, prefill_top_count);
      if (requests[i].max_new_tokens > 0) take(i, row);
      first_pending = i + 1;
    }
  }
  std::vector<float> step_logits;  // reused by every decode step
  while (true) {
    std::vector<SequenceStep> decode;
    std::vector<size_t> which;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!live[i]) continue;
      decode.push_back({&caches[i], std::span<const int32_t>(&next_token[i], 1)});
      which.push_back(i);
    }
    if (decode.empty()) break;
    RETURN_IF_ERROR(model.ForwardInto(decode, routed_experts, &step_logits));
    for (size_t j = 0; j < which.size(); ++j) take(which[j], step_logits.data() + j * vocab);
  }
  return results;
}

}  // namespace moemesh::model
