// DeepSeek-V3's main model in float32 on the CPU: embedding, per layer RMSNorm + MLA (absorbed,
// latent KV cache) and dense MLP or MoE (gate, routed experts via RoutedExperts, shared expert),
// final norm and lm_head (DeepSeek-V3 inference/model.py Transformer/Block/MLA/MoE/Gate).
//
// A forward step takes several sequences at once, each with any number of new tokens (prefill
// chunk or one decode token) at its own position; their rows are concatenated.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint.h"
#include "core/model/latent_cache.h"
#include "core/model/model_weights.h"
#include "core/model/rope.h"
#include "core/model/routed_experts.h"

namespace moemesh::model {

// One sequence's share of a step: `tokens` go at positions cache->length(), ... .
struct SequenceStep {
  LatentCache* cache = nullptr;
  std::span<const int32_t> tokens;
  // False for a prefill chunk that does not end the prompt: nobody samples from it, so its
  // lm_head row (the largest matrix of a step) is skipped.
  bool wants_logits = true;
};

// Row layout of a step: sequence i owns rows [row_begin[i], row_begin[i] + row_count[i]).
struct StepLayout {
  std::vector<LatentCache*> caches;
  std::vector<int64_t> row_begin;
  std::vector<int64_t> row_count;
  std::vector<int64_t> start_position;  // cache length before the step
  int64_t total_rows = 0;
  static StepLayout From(std::span<const SequenceStep> steps);
};

// Optional record of a step's intermediate values (tests compare them with the goldens).
struct ForwardTrace {
  std::vector<std::vector<float>> layer_outputs;  // [layer][rows * hidden], after each block
  std::vector<std::pair<int, GateDecision>> gates;  // (layer, decision) per MoE layer
  bool record_layer_outputs = true;  // false: gates only (cheap enough for metrics)
};

class DeepseekModel {
 public:
  // Loads every tensor but the routed experts. Errors name the file and tensor at fault.
  static absl::StatusOr<std::unique_ptr<DeepseekModel>> Load(checkpoint::Checkpoint& checkpoint);

  const checkpoint::ModelConfig& config() const { return config_; }
  // A pool of latent cache blocks for this model's shape (capacity_blocks 0 = unbounded).
  std::shared_ptr<LatentBlockPool> NewBlockPool(int64_t capacity_blocks,
                                                int block_size = kDefaultCacheBlockSize) const;
  // A new, empty latent cache for one sequence, from an unbounded pool shared by such caches.
  LatentCache NewCache() const;
  static constexpr int kDefaultCacheBlockSize = 64;

  // Runs one step. Returns logits [steps.size(), vocab]: for each sequence, at its last new token
  // (zeros for a step with wants_logits false), or, with `all_positions`, [total_rows, vocab]
  // for every new token. Appends to each cache.
  // Errors: token ids out of range, a RoutedExperts failure, or ResourceExhausted when memory
  // for the step cannot be allocated (std::bad_alloc anywhere inside); caches are rolled back.
  absl::StatusOr<std::vector<float>> Forward(std::span<const SequenceStep> steps,
                                             RoutedExperts& routed_experts,
                                             ForwardTrace* trace = nullptr,
                                             bool all_positions = false);
  // The same into a caller's buffer (resized to fit; kept between steps, it is not reallocated
  // once large enough).
  absl::Status ForwardInto(std::span<const SequenceStep> steps, RoutedExperts& routed_experts,
                           std::vector<float>* logits, ForwardTrace* trace = nullptr,
                           bool all_positions = false);

  // --- The pieces Forward is made of, for callers that schedule layers themselves. ---
  // hidden [rows, hidden] = embed_tokens[tokens]. Errors: an id outside [0, vocab).
  absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const;
  // hidden += MLA(attn_norm(hidden)) for `layer`, appending the step's latents to the caches.
  // Errors: ResourceExhausted when a bounded cache pool has no room for the new positions.
  absl::Status AttentionBlock(int layer, const StepLayout& layout, float* hidden) const;
  // normed [rows, hidden] = ffn_norm(hidden) of `layer`.
  void FeedForwardNorm(int layer, const float* hidden, int64_t rows, float* normed) const;
  // The MoE gate of `layer` on normed rows (model.py Gate, noaux_tc): sigmoid scores, bias added
  // for the choice only, top topk_group groups by the sum of each group's two best biased
  // scores, top-k experts among them, weights = unbiased scores normalised times
  // routed_scaling_factor.
  GateDecision Gate(int layer, const float* normed, int64_t rows) const;
  // out [rows, hidden] = dense MLP (non-MoE layer) or shared expert (MoE layer) of `layer`.
  void DenseFeedForward(int layer, const float* normed, int64_t rows, float* out) const;
  // logits [rows, vocab] = lm_head(norm(hidden)) for the given rows of hidden (stride hidden).
  void Logits(const float* hidden, int64_t rows, float* logits) const;

  const DenseWeights& weights() const { return weights_; }

  // Which attention core AttentionBlock runs: the tiled online-softmax kernel (the default;
  // memory independent of context length) or the untiled reference (tests compare the two).
  enum class AttentionKernel { kTiled, kNaive };
  void set_attention_kernel(AttentionKernel kernel) { attention_kernel_ = kernel; }

 private:
  DeepseekModel(const checkpoint::ModelConfig& config, DenseWeights weights)
      : config_(config),
        weights_(std::move(weights)),
        rope_(config),
        default_pool_(NewBlockPool(/*capacity_blocks=*/0)) {}

  // Forward without the allocation-failure boundary.
  absl::Status ForwardUnchecked(std::span<const SequenceStep> steps,
                                RoutedExperts& routed_experts, std::vector<float>* logits,
                                ForwardTrace* trace, bool all_positions);

  checkpoint::ModelConfig config_;
  DenseWeights weights_;
  RotaryEmbedding rope_;
  std::shared_ptr<LatentBlockPool> default_pool_;
  AttentionKernel attention_kernel_ = AttentionKernel::kTiled;
};

}  // namespace moemesh::model
