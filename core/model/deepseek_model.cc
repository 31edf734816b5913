#include "core/model/deepseek_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/dtype.h"
#include "core/kernels/cpu/elementwise.h"
#include "core/kernels/cpu/gemm.h"
#include "core/kernels/cpu/linear.h"
#include "core/model/expert_shard.h"
#include "core/status_macros.h"

namespace moemesh::model {
namespace {

// Indices of the `k` largest values, largest first; ties go to the lower index.
std::vector<int> TopKIndices(const float* values, int count, int k) {
  std::vector<int> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    if (values[a] != values[b]) return values[a] > values[b];
    return a < b;
  });
  order.resize(k);
  return order;
}

}  // namespace

StepLayout StepLayout::From(std::span<const SequenceStep> steps) {
  StepLayout layout;
  for (const SequenceStep& step : steps) {
    layout.caches.push_back(step.cache);
    layout.row_begin.push_back(layout.total_rows);
    layout.row_count.push_back(static_cast<int64_t>(step.tokens.size()));
    layout.start_position.push_back(step.cache->length());
    layout.total_rows += static_cast<int64_t>(step.tokens.size());
  }
  return layout;
}

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(
    checkpoint::Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(DenseWeights weights, LoadDenseWeights(checkpoint));
  return std::unique_ptr<DeepseekModel>(new DeepseekModel(checkpoint.config(), std::move(weights)));
}

std::shared_ptr<LatentBlockPool> DeepseekModel::NewBlockPool(int64_t capacity_blocks,
                                                             int block_size) const {
  return std::make_shared<LatentBlockPool>(config_.num_hidden_layers, config_.kv_lora_rank,
                                           config_.qk_rope_head_dim, block_size, capacity_blocks);
}

LatentCache DeepseekModel::NewCache() const { return LatentCache(default_pool_); }

absl::Status DeepseekModel::Embed(std::span<const int32_t> tokens, float* hidden) const {
  const int64_t hidden_size = config_.hidden_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " outside [0, ",
                                                     config_.vocab_size, ")"));
    }
    const WeightMatrix& table = weights_.embed_tokens;
    const int64_t offset = static_cast<int64_t>(tokens[i]) * hidden_size;
    float* row = hidden + i * hidden_size;
    if (table.format == WeightMatrix::Format::kBFloat16) {
      const uint16_t* bits = table.bf16.data() + offset;
      for (int64_t j = 0; j < hidden_size; ++j) row[j] = checkpoint::BFloat16ToFloat(bits[j]);
    } else {  // the loader keeps embeddings BF16 or float32
      std::memcpy(row, table.values.data() + offset, sizeof(float) * hidden_size);
    }
  }
  return absl::OkStatus();
}

absl::Status DeepseekModel::AttentionBlock(int layer, const StepLayout& layout,
                                           float* hidden) const {
  const AttentionWeights& weights = weights_.layers[layer].attention;
  const int64_t rows = layout.total_rows;
  const int64_t hidden_size = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t nope = config_.qk_nope_head_dim;
  const int64_t rope = config_.qk_rope_head_dim;
  const int64_t qk_head = nope + rope;
  const int64_t value_dim = config_.v_head_dim;
  const int64_t kv_rank = config_.kv_lora_rank;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  std::vector<float> normed(static_cast<size_t>(rows * hidden_size));
  kernels::RmsNorm(hidden, rows, hidden_size, hidden_size, weights.input_norm.data(), eps,
                   normed.data());

  // Queries: [rows, heads, nope + rope].
  std::vector<float> query(static_cast<size_t>(rows * heads * qk_head));
  if (weights.q_a_proj.has_value()) {
    const int64_t q_rank = weights.q_a_proj->rows;
    std::vector<float> compressed(static_cast<size_t>(rows * q_rank));
    kernels::Linear(normed.data(), rows, *weights.q_a_proj, compressed.data());
    kernels::RmsNorm(compressed.data(), rows, q_rank, q_rank, weights.q_a_norm.data(), eps,
                     compressed.data());
    kernels::Linear(compressed.data(), rows, weights.q_b_proj, query.data());
  } else {
    kernels::Linear(normed.data(), rows, weights.q_b_proj, query.data());
  }
  // Keys/values: the compressed latent [rows, kv_rank] and the shared rope key [rows, rope].
  std::vector<float> kv(static_cast<size_t>(rows * (kv_rank + rope)));
  kernels::Linear(normed.data(), rows, weights.kv_a_proj, kv.data());
  std::vector<float> latent(static_cast<size_t>(rows * kv_rank));
  std::vector<float> rope_key(static_cast<size_t>(rows * rope));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(latent.data() + r * kv_rank, kv.data() + r * (kv_rank + rope),
                sizeof(float) * kv_rank);
    std::memcpy(rope_key.data() + r * rope, kv.data() + r * (kv_rank + rope) + kv_rank,
                sizeof(float) * rope);
  }
  kernels::RmsNorm(latent.data(), rows, kv_rank, kv_rank, weights.kv_a_norm.data(), eps,
                   latent.data());
  for (size_t s = 0; s < layout.caches.size(); ++s) {
    for (int64_t i = 0; i < layout.row_count[s]; ++i) {
      const int64_t row = layout.row_begin[s] + i;
      const int64_t position = layout.start_position[s] + i;
      rope_.Apply(query.data() + row * heads * qk_head + nope, static_cast<int>(heads), qk_head,
                  position);
      rope_.Apply(rope_key.data() + row * rope, 1, rope, position);
    }
    RETURN_IF_ERROR(layout.caches[s]->Append(layer, latent.data() + layout.row_begin[s] * kv_rank,
                                             rope_key.data() + layout.row_begin[s] * rope,
                                             layout.row_count[s]));
  }

  // Absorb kv_b_proj's key half into the queries: q_latent[r, h] = q_nope[r, h] · W_uk[h],
  // W_uk[h] = kv_b_proj rows [h * (nope + v), h * (nope + v) + nope), shape [nope, kv_rank].
  const float* kv_b = weights.kv_b_proj.data();
  std::vector<float> query_latent(static_cast<size_t>(rows * heads * kv_rank));
  for (int64_t h = 0; h < heads; ++h) {
    kernels::MatMul(query.data() + h * qk_head, heads * qk_head, rows,
                    kv_b + h * (nope + value_dim) * kv_rank, kv_rank, nope, kv_rank,
                    query_latent.data() + h * kv_rank, heads * kv_rank);
  }

  // Scores against every cached position, causal within the step, softmax, then the weighted
  // sum of latents: context [rows, heads, kv_rank]. The cache is paged, so each product runs
  // block by block into the matching columns.
  const float softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(qk_head)) *
                                                 rope_.SoftmaxScaleMultiplier());
  std::vector<float> context(static_cast<size_t>(rows * heads * kv_rank));
  std::vector<float> scores;
  std::vector<float> rope_scratch;
  for (size_t s = 0; s < layout.caches.size(); ++s) {
    const LatentCache& cache = *layout.caches[s];
    const int64_t count = layout.row_count[s];
    if (count == 0) continue;
    const int64_t positions = cache.positions(layer);
    const int64_t query_rows = count * heads;
    const int64_t block_size = cache.block_size();
    const float* sequence_query_latent = query_latent.data() + layout.row_begin[s] * heads * kv_rank;
    const float* sequence_query_rope = query.data() + layout.row_begin[s] * heads * qk_head + nope;
    scores.assign(static_cast<size_t>(query_rows * positions), 0.0f);
    for (int64_t block = 0; block * block_size < positions; ++block) {
      const int64_t first = block * block_size;
      const int64_t width = std::min(block_size, positions - first);
      // Batch-invariant products (kernels/cpu/gemm.h): a row's scores do not depend on how
      // many query rows share the step, so chunked prefill gives the same bits.
      kernels::MatMulTransposed(sequence_query_latent, kv_rank, query_rows,
                                cache.block_latent(block, layer), kv_rank, width, kv_rank,
                                scores.data() + first, positions);
      std::vector<float>& rope_scores = rope_scratch;
      rope_scores.resize(static_cast<size_t>(query_rows * width));
      kernels::MatMulTransposed(sequence_query_rope, qk_head, query_rows,
                                cache.block_rope_key(block, layer), rope, width, rope,
                                rope_scores.data(), width);
      for (int64_t r = 0; r < query_rows; ++r) {
        float* row = scores.data() + r * positions + first;
        for (int64_t t = 0; t < width; ++t) row[t] += rope_scores[r * width + t];
      }
    }
    for (int64_t i = 0; i < count; ++i) {
      const int64_t visible = layout.start_position[s] + i + 1;
      for (int64_t h = 0; h < heads; ++h) {
        float* row_scores = scores.data() + (i * heads + h) * positions;
        for (int64_t t = 0; t < visible; ++t) row_scores[t] *= softmax_scale;
        kernels::Softmax(row_scores, visible);
        std::fill(row_scores + visible, row_scores + positions, 0.0f);
      }
    }
    float* sequence_context = context.data() + layout.row_begin[s] * heads * kv_rank;
    for (int64_t block = 0; block * block_size < positions; ++block) {
      const int64_t first = block * block_size;
      const int64_t width = std::min(block_size, positions - first);
      kernels::MatMul(scores.data() + first, positions, query_rows,
                      cache.block_latent(block, layer), kv_rank, width, kv_rank, sequence_context,
                      kv_rank, /*accumulate=*/block != 0);
    }
  }

  // Absorb the value half: out[r, h] = context[r, h] · W_uv[h]^T, W_uv[h] [v, kv_rank].
  std::vector<float> attention_out(static_cast<size_t>(rows * heads * value_dim));
  for (int64_t h = 0; h < heads; ++h) {
    kernels::MatMulTransposed(context.data() + h * kv_rank, heads * kv_rank, rows,
                              kv_b + (h * (nope + value_dim) + nope) * kv_rank, kv_rank, value_dim,
                              kv_rank, attention_out.data() + h * value_dim, heads * value_dim);
  }
  std::vector<float> projected(static_cast<size_t>(rows * hidden_size));
  kernels::Linear(attention_out.data(), rows, weights.o_proj, projected.data());
  for (int64_t i = 0; i < rows * hidden_size; ++i) hidden[i] += projected[i];
  return absl::OkStatus();
}

void DeepseekModel::FeedForwardNorm(int layer, const float* hidden, int64_t rows,
                                    float* normed) const {
  kernels::RmsNorm(hidden, rows, config_.hidden_size, config_.hidden_size,
                   weights_.layers[layer].post_attention_norm.data(),
                   static_cast<float>(config_.rms_norm_eps), normed);
}

GateDecision DeepseekModel::Gate(int layer, const float* normed, int64_t rows) const {
  const GateWeights& gate = weights_.layers[layer].gate;
  const int experts = config_.n_routed_experts;
  const int top_k = config_.num_experts_per_tok;
  const int groups = config_.n_group;
  const int per_group = experts / groups;
  std::vector<float> logits(static_cast<size_t>(rows * experts));
  kernels::Linear(normed, rows, gate.weight, logits.data());
  GateDecision decision;
  decision.top_k = top_k;
  decision.experts.resize(static_cast<size_t>(rows * top_k));
  decision.weights.resize(static_cast<size_t>(rows * top_k));
  const bool sigmoid = config_.scoring_func == "sigmoid";
  std::vector<float> original(experts);
  std::vector<float> choice(experts);
  std::vector<float> group_scores(groups);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row_logits = logits.data() + r * experts;
    if (sigmoid) {
      for (int e = 0; e < experts; ++e) original[e] = 1.0f / (1.0f + std::exp(-row_logits[e]));
    } else {
      std::copy(row_logits, row_logits + experts, original.begin());
      kernels::Softmax(original.data(), experts);
    }
    for (int e = 0; e < experts; ++e) {
      choice[e] = original[e] + (gate.correction_bias.empty() ? 0.0f : gate.correction_bias[e]);
    }
    if (groups > 1) {
      for (int g = 0; g < groups; ++g) {
        const float* group = choice.data() + g * per_group;
        if (gate.correction_bias.empty()) {
          group_scores[g] = *std::max_element(group, group + per_group);
        } else {
          std::vector<int> best_two = TopKIndices(group, per_group, std::min(2, per_group));
          group_scores[g] = 0.0f;
          for (int index : best_two) group_scores[g] += group[index];
        }
      }
      std::vector<int> kept = TopKIndices(group_scores.data(), groups, config_.topk_group);
      std::vector<bool> keep(groups, false);
      for (int g : kept) keep[g] = true;
      for (int g = 0; g < groups; ++g) {
        if (keep[g]) continue;
        std::fill(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group,
                  -std::numeric_limits<float>::infinity());
      }
    }
    std::vector<int> chosen = TopKIndices(choice.data(), experts, top_k);
    float sum = 0.0f;
    for (int k = 0; k < top_k; ++k) sum += original[chosen[k]];
    for (int k = 0; k < top_k; ++k) {
      float weight = original[chosen[k]];
      if (sigmoid && config_.norm_topk_prob) weight /= sum;
      decision.experts[r * top_k + k] = chosen[k];
      decision.weights[r * top_k + k] = weight * static_cast<float>(config_.routed_scaling_factor);
    }
  }
  return decision;
}

void DeepseekModel::DenseFeedForward(int layer, const float* normed, int64_t rows,
                                     float* out) const {
  const LayerWeights& weights = weights_.layers[layer];
  SwiGluFeedForward(weights.is_moe ? weights.shared_expert : weights.dense_mlp, normed, rows, out);
}

void DeepseekModel::Logits(const float* hidden, int64_t rows, float* logits) const {
  std::vector<float> normed(static_cast<size_t>(rows * config_.hidden_size));
  kernels::RmsNorm(hidden, rows, config_.hidden_size, config_.hidden_size,
                   weights_.final_norm.data(), static_cast<float>(config_.rms_norm_eps),
                   normed.data());
  kernels::Linear(normed.data(), rows, weights_.lm_head, logits);
}

absl::StatusOr<std::vector<float>> DeepseekModel::Forward(std::span<const SequenceStep> steps,
                                                          RoutedExperts& routed_experts,
                                                          ForwardTrace* trace,
                                                          bool all_positions) {
  const StepLayout layout = StepLayout::From(steps);
  const int64_t rows = layout.total_rows;
  const int64_t hidden_size = config_.hidden_size;
  std::vector<float> hidden(static_cast<size_t>(rows * hidden_size));
  for (size_t s = 0; s < steps.size(); ++s) {
    RETURN_IF_ERROR(Embed(steps[s].tokens, hidden.data() + layout.row_begin[s] * hidden_size));
  }
  auto roll_back = [&] {
    for (size_t s = 0; s < layout.caches.size(); ++s) {
      layout.caches[s]->Truncate(layout.start_position[s]);
    }
  };
  std::vector<float> normed(static_cast<size_t>(rows * hidden_size));
  std::vector<float> routed(static_cast<size_t>(rows * hidden_size));
  std::vector<float> dense(static_cast<size_t>(rows * hidden_size));
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
    if (absl::Status status = AttentionBlock(layer, layout, hidden.data()); !status.ok()) {
      roll_back();
      return status;
    }
    FeedForwardNorm(layer, hidden.data(), rows, normed.data());
    if (weights_.layers[layer].is_moe) {
      GateDecision decision = Gate(layer, normed.data(), rows);
      // Routed experts first (they may be remote), the shared expert while they run.
      absl::StatusOr<RoutedExperts::Combine> combine =
          routed_experts.Dispatch(layer, normed.data(), rows, decision);
      if (!combine.ok()) {
        roll_back();
        return combine.status();
      }
      DenseFeedForward(layer, normed.data(), rows, dense.data());
      if (absl::Status status = (*combine)(routed.data()); !status.ok()) {
        roll_back();
        return status;
      }
      // model.py MoE returns y + z (routed + shared); the block adds that to the residual.
      for (int64_t i = 0; i < rows * hidden_size; ++i) hidden[i] += routed[i] + dense[i];
      if (trace != nullptr) trace->gates.emplace_back(layer, std::move(decision));
    } else {
      DenseFeedForward(layer, normed.data(), rows, dense.data());
      for (int64_t i = 0; i < rows * hidden_size; ++i) hidden[i] += dense[i];
    }
    if (trace != nullptr && trace->record_layer_outputs) trace->layer_outputs.push_back(hidden);
  }
  for (size_t s = 0; s < layout.caches.size(); ++s) layout.caches[s]->Commit(layout.row_count[s]);

  const int64_t vocab = config_.vocab_size;
  if (all_positions) {
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    Logits(hidden.data(), rows, logits.data());
    return logits;
  }
  std::vector<size_t> wanted;
  for (size_t s = 0; s < steps.size(); ++s) {
    if (steps[s].wants_logits) wanted.push_back(s);
  }
  std::vector<float> last_rows(wanted.size() * hidden_size);
  for (size_t i = 0; i < wanted.size(); ++i) {
    const int64_t last = layout.row_begin[wanted[i]] + layout.row_count[wanted[i]] - 1;
    std::memcpy(last_rows.data() + i * hidden_size, hidden.data() + last * hidden_size,
                sizeof(float) * hidden_size);
  }
  std::vector<float> logits(steps.size() * vocab);
  if (wanted.size() == steps.size()) {
    Logits(last_rows.data(), static_cast<int64_t>(wanted.size()), logits.data());
    return logits;
  }
  std::vector<float> wanted_logits(wanted.size() * vocab);
  Logits(last_rows.data(), static_cast<int64_t>(wanted.size()), wanted_logits.data());
  for (size_t i = 0; i < wanted.size(); ++i) {
    std::memcpy(logits.data() + wanted[i] * vocab, wanted_logits.data() + i * vocab,
                sizeof(float) * vocab);
  }
  return logits;
}

}  // namespace moemesh::model
