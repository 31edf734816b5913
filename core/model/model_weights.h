// The tensors of DeepSeek-V3's main model (everything but the MTP module), as loaded from a
// checkpoint. Names follow the Hugging Face layout; the comments give DeepSeek's
// inference/model.py names.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/weight_matrix.h"
#include "core/kernels/cpu/packed_bf16.h"

namespace moemesh::model {

using checkpoint::WeightMatrix;

// Multi-head latent attention of one layer (model.py MLA).
struct AttentionWeights {
  std::vector<float> input_norm;  // attn_norm, [hidden]
  // Query path: q_a_proj [q_lora_rank, hidden] + q_a_layernorm [q_lora_rank] + q_b_proj
  // [heads * qk_head_dim, q_lora_rank] when q_lora_rank > 0, else q_proj (in q_b_proj's slot).
  std::optional<WeightMatrix> q_a_proj;
  std::vector<float> q_a_norm;
  WeightMatrix q_b_proj;
  WeightMatrix kv_a_proj;       // kv_a_proj_with_mqa (wkv_a), [kv_lora_rank + rope, hidden]
  std::vector<float> kv_a_norm;  // kv_norm, [kv_lora_rank]
  // kv_b_proj (wkv_b), [heads * (nope + v), kv_lora_rank], dequantized: the absorbed form
  // multiplies queries and outputs by it directly.
  std::vector<float> kv_b_proj;
  WeightMatrix o_proj;  // wo, [hidden, heads * v_head_dim]
};

// A SwiGLU feed-forward network: down(silu(gate(x)) * up(x)) (model.py MLP / Expert).
struct FeedForwardWeights {
  WeightMatrix gate_proj;  // w1, [intermediate, hidden]
  WeightMatrix up_proj;    // w3, [intermediate, hidden]
  WeightMatrix down_proj;  // w2, [hidden, intermediate]
  int64_t StorageBytes() const {
    return gate_proj.StorageBytes() + up_proj.StorageBytes() + down_proj.StorageBytes();
  }
};

// The MoE gate of one layer (model.py Gate): weight [n_routed_experts, hidden] (BF16 in DeepSeek's
// checkpoints, kept so) and the noaux_tc e_score_correction_bias [n_routed_experts] (chooses
// experts, never weights them).
struct GateWeights {
  WeightMatrix weight;
  std::vector<float> correction_bias;  // empty when the checkpoint has none
};

struct LayerWeights {
  AttentionWeights attention;
  std::vector<float> post_attention_norm;  // ffn_norm, [hidden]
  bool is_moe = false;
  FeedForwardWeights dense_mlp;       // when !is_moe
  GateWeights gate;                   // when is_moe
  FeedForwardWeights shared_expert;   // when is_moe and n_shared_experts > 0
};

// Everything the attention side needs: embeddings, all layers but the routed experts, final norm
// and lm_head. Linear weights stay in the checkpoint's format (FP8 blocks, BF16 - lm_head, gate and
// the embeddings of DeepSeek's checkpoints - or float32); only kv_b_proj is dequantized.
struct DenseWeights {
  WeightMatrix embed_tokens;  // [vocab, hidden]; Embed widens the rows it looks up
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  // [vocab, hidden]. A BF16 lm_head (hidden a multiple of 64) is held in lm_head_packed instead,
  // losslessly in 12 bits per weight (it is the largest read of a decode step): lm_head then
  // keeps its shape and format but no values.
  WeightMatrix lm_head;
  std::optional<kernels::PackedBf16Matrix> lm_head_packed;
};

// Tensor name prefix of routed expert `expert` of `layer`, e.g. "model.layers.3.mlp.experts.7".
std::string RoutedExpertPrefix(int layer, int expert);

// Loads everything but the routed experts. Errors name the file and tensor at fault.
absl::StatusOr<DenseWeights> LoadDenseWeights(checkpoint::Checkpoint& checkpoint);

// Loads one routed expert's three projections (and their scales): only their byte ranges are read.
absl::StatusOr<FeedForwardWeights> LoadRoutedExpert(checkpoint::Checkpoint& checkpoint, int layer,
                                                    int expert);

}  // namespace moemesh::model
