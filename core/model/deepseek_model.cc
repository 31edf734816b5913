#include "core/model/deepseek_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/dtype.h"
#include "core/kernels/cpu/compute_pool.h"
#include "core/kernels/cpu/elementwise.h"
#include "core/kernels/cpu/gemm.h"
#include "core/kernels/cpu/linear.h"
#include "core/kernels/cpu/packed_bf16.h"
#include "core/kernels/cpu/threading.h"
#include "core/model/expert_shard.h"
#include "core/model/mla_attention.h"
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

  // Attention per sequence, in the latent space (core/model/mla_attention.h):
  // attention_out [rows, heads, value_dim].
  const MlaDims dims{heads, nope, rope, value_dim, kv_rank,
                     static_cast<float>(1.0 / std::sqrt(static_cast<double>(qk_head)) *
                                        rope_.SoftmaxScaleMultiplier())};
  std::vector<float> attention_out(static_cast<size_t>(rows * heads * value_dim));
  if (attention_kernel_ == AttentionKernel::kNaive) {
    for (size_t s = 0; s < layout.caches.size(); ++s) {
      if (layout.row_count[s] == 0) continue;
      MlaAttentionNaive(dims, *layout.caches[s], layer, weights.kv_b_proj.data(),
                        query.data() + layout.row_begin[s] * heads * qk_head, layout.row_count[s],
                        layout.start_position[s],
                        attention_out.data() + layout.row_begin[s] * heads * value_dim);
    }
  } else {
    // The tiled kernel computes every (row, head) on its own (mla_attention.h), so the work is
    // split into items over the compute threads without changing a bit: runs of rows of a
    // sequence (row i of a run sees the positions row start + i sees), and, for one-row
    // sequences fewer than the threads (batch-1 decode), groups of heads.
    struct Item {
      size_t sequence;
      int64_t row_begin, row_count, head_begin, head_count;
    };
    const int threads = kernels::ComputeThreads();
    constexpr int64_t kRowsPerItem = 8;
    std::vector<Item> items;
    for (size_t s = 0; s < layout.caches.size(); ++s) {
      const int64_t count = layout.row_count[s];
      if (count == 1 && static_cast<int64_t>(layout.caches.size()) < threads) {
        const int64_t per_group = (heads + threads - 1) / threads;
        for (int64_t h = 0; h < heads; h += per_group) {
          items.push_back({s, 0, 1, h, std::min(per_group, heads - h)});
        }
        continue;
      }
      for (int64_t r = 0; r < count; r += kRowsPerItem) {
        items.push_back({s, r, std::min(kRowsPerItem, count - r), 0, heads});
      }
    }
    const int64_t item_count = static_cast<int64_t>(items.size());
    kernels::ParallelFor(item_count, threads, [&](int64_t i) {
      const Item& item = items[i];
      const int64_t first_row = layout.row_begin[item.sequence] + item.row_begin;
      MlaDims part = dims;
      part.heads = item.head_count;
      const float* kv_b = weights.kv_b_proj.data() + item.head_begin * (nope + value_dim) * kv_rank;
      if (item.head_count == heads) {
        MlaAttentionTiled(part, *layout.caches[item.sequence], layer, kv_b,
                          query.data() + first_row * heads * qk_head, item.row_count,
                          layout.start_position[item.sequence] + item.row_begin,
                          attention_out.data() + first_row * heads * value_dim);
      } else {  // one row: its heads [head_begin, + head_count) are contiguous in query and out
        MlaAttentionTiled(part, *layout.caches[item.sequence], layer, kv_b,
                          query.data() + first_row * heads * qk_head + item.head_begin * qk_head,
                          1, layout.start_position[item.sequence],
                          attention_out.data() + first_row * heads * value_dim +
                              item.head_begin * value_dim);
      }
    });
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
  if (weights_.lm_head_packed.has_value()) {
    kernels::LinearPacked(normed.data(), rows, *weights_.lm_head_packed, logits);
  } else {
    kernels::Linear(normed.data(), rows, weights_.lm_head, logits);
  }
}

absl::StatusOr<std::vector<float>> DeepseekModel::Forward(std::span<const SequenceStep> steps,
                                                          RoutedExperts& routed_experts,
                                                          ForwardTrace* trace,
                                                          bool all_positions) {
  std::vector<float> logits;
  RETURN_IF_ERROR(ForwardInto(steps, routed_experts, &logits, trace, all_positions));
  return logits;
}

absl::Status DeepseekModel::ForwardInto(std::span<const SequenceStep> steps,
                                        RoutedExperts& routed_experts, std::vector<float>* logits,
                                        ForwardTrace* trace, bool all_positions) {
  // An allocation that fails anywhere in the step (activations, cache blocks, a RoutedExperts
  // buffer) becomes an error of this step: the caches are rolled back to where they were.
  std::vector<int64_t> lengths;
  lengths.reserve(steps.size());
  for (const SequenceStep& step : steps) lengths.push_back(step.cache->length());
  try {
    return ForwardUnchecked(steps, routed_experts, logits, trace, all_positions);
  } catch (const std::bad_alloc&) {
    for (size_t s = 0; s < steps.size(); ++s) steps[s].cache->Truncate(lengths[s]);
    int64_t rows = 0;
    for (const SequenceStep& step : steps) rows += static_cast<int64_t>(step.tokens.size());
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of memory: a step of ", rows, " tokens over ", steps.size(),
        " sequences could not allocate its buffers"));
  }
}

absl::Status DeepseekModel::ForwardUnchecked(std::span<const SequenceStep> steps,
                                             RoutedExperts& routed_experts,
                                             std::vector<float>* logits, ForwardTrace* trace,
                                             bool all_positions) {
  const StepLayout layout = StepLayout::From(steps);
  const int64_t rows = layout.total_rows;
  const int64_t hidden_size = config_.hidden_size;
  // Activations live in per-thread buffers kept from step to step (each is fully written before
  // it is read), so a step allocates only when it is larger than every earlier one.
  struct Workspace {
    std::vector<float> hidden, normed, routed, dense, last_rows;
  };
  thread_local Workspace workspace;
  std::vector<float>& hidden = workspace.hidden;
  hidden.resize(static_cast<size_t>(rows * hidden_size));
  for (size_t s = 0; s < steps.size(); ++s) {
    RETURN_IF_ERROR(Embed(steps[s].tokens, hidden.data() + layout.row_begin[s] * hidden_size));
  }
  auto roll_back = [&] {
    for (size_t s = 0; s < layout.caches.size(); ++s) {
      layout.caches[s]->Truncate(layout.start_position[s]);
    }
  };
  std::vector<float>& normed = workspace.normed;
  std::vector<float>& routed = workspace.routed;
  std::vector<float>& dense = workspace.dense;
  normed.resize(static_cast<size_t>(rows * hidden_size));
  routed.resize(static_cast<size_t>(rows * hidden_size));
  dense.resize(static_cast<size_t>(rows * hidden_size));
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
    logits->resize(static_cast<size_t>(rows * vocab));
    Logits(hidden.data(), rows, logits->data());
    return absl::OkStatus();
  }
  std::vector<size_t> wanted;
  for (size_t s = 0; s < steps.size(); ++s) {
    if (steps[s].wants_logits) wanted.push_back(s);
  }
  std::vector<float>& last_rows = workspace.last_rows;
  last_rows.resize(wanted.size() * hidden_size);
  for (size_t i = 0; i < wanted.size(); ++i) {
    const int64_t last = layout.row_begin[wanted[i]] + layout.row_count[wanted[i]] - 1;
    std::memcpy(last_rows.data() + i * hidden_size, hidden.data() + last * hidden_size,
                sizeof(float) * hidden_size);
  }
  // The wanted rows are computed into the front of the buffer, then moved to their sequences'
  // rows (back to front: wanted[i] >= i) and the others zeroed.
  logits->resize(steps.size() * vocab);
  float* out = logits->data();
  Logits(last_rows.data(), static_cast<int64_t>(wanted.size()), out);
  if (wanted.size() == steps.size()) return absl::OkStatus();
  std::vector<bool> has_row(steps.size(), false);
  for (size_t i = wanted.size(); i-- > 0;) {
    has_row[wanted[i]] = true;
    if (wanted[i] != i) {
      std::memmove(out + wanted[i] * vocab, out + i * vocab, sizeof(float) * vocab);
    }
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    if (!has_row[s]) std::fill(out + s * vocab, out + (s + 1) * vocab, 0.0f);
  }
  return absl::OkStatus();
}

}  // namespace moemesh::model
