#include "core/model/model_weights.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moemesh::model {
namespace {

using checkpoint::Checkpoint;
using checkpoint::ModelConfig;

// A linear weight in the checkpoint's own format: FP8 blocks stay FP8, BF16 stays BF16.
absl::StatusOr<WeightMatrix> ReadKept(Checkpoint& checkpoint, const std::string& prefix,
                                      int64_t rows, int64_t cols) {
  return checkpoint.ReadWeight(prefix, rows, cols, /*dequantize=*/false, /*keep_bf16=*/true);
}

absl::StatusOr<FeedForwardWeights> LoadFeedForward(Checkpoint& checkpoint,
                                                   const std::string& prefix, int64_t hidden,
                                                   int64_t intermediate) {
  FeedForwardWeights weights;
  ASSIGN_OR_RETURN(weights.gate_proj,
                   ReadKept(checkpoint, prefix + ".gate_proj", intermediate, hidden));
  ASSIGN_OR_RETURN(weights.up_proj, ReadKept(checkpoint, prefix + ".up_proj", intermediate, hidden));
  ASSIGN_OR_RETURN(weights.down_proj,
                   ReadKept(checkpoint, prefix + ".down_proj", hidden, intermediate));
  return weights;
}

absl::StatusOr<AttentionWeights> LoadAttention(Checkpoint& checkpoint, const std::string& prefix,
                                               const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t heads = config.num_attention_heads;
  AttentionWeights weights;
  if (config.q_lora_rank > 0) {
    ASSIGN_OR_RETURN(weights.q_a_proj,
                     ReadKept(checkpoint, prefix + ".self_attn.q_a_proj", config.q_lora_rank, hidden));
    ASSIGN_OR_RETURN(weights.q_a_norm, checkpoint.ReadFloat(prefix + ".self_attn.q_a_layernorm.weight",
                                                            {config.q_lora_rank}));
    ASSIGN_OR_RETURN(weights.q_b_proj,
                     ReadKept(checkpoint, prefix + ".self_attn.q_b_proj",
                                           heads * config.qk_head_dim(), config.q_lora_rank));
  } else {
    ASSIGN_OR_RETURN(weights.q_b_proj, ReadKept(checkpoint, prefix + ".self_attn.q_proj",
                                                             heads * config.qk_head_dim(), hidden));
  }
  ASSIGN_OR_RETURN(weights.kv_a_proj,
                   ReadKept(checkpoint, prefix + ".self_attn.kv_a_proj_with_mqa",
                                         config.kv_lora_rank + config.qk_rope_head_dim, hidden));
  ASSIGN_OR_RETURN(weights.kv_a_norm, checkpoint.ReadFloat(prefix + ".self_attn.kv_a_layernorm.weight",
                                                           {config.kv_lora_rank}));
  WeightMatrix kv_b;
  ASSIGN_OR_RETURN(kv_b, checkpoint.ReadWeight(prefix + ".self_attn.kv_b_proj",
                                               heads * (config.qk_nope_head_dim + config.v_head_dim),
                                               config.kv_lora_rank, /*dequantize=*/true));
  weights.kv_b_proj = std::move(kv_b.values);
  ASSIGN_OR_RETURN(weights.o_proj, ReadKept(checkpoint, prefix + ".self_attn.o_proj", hidden,
                                                         heads * config.v_head_dim));
  ASSIGN_OR_RETURN(weights.input_norm,
                   checkpoint.ReadFloat(prefix + ".input_layernorm.weight", {hidden}));
  return weights;
}

}  // namespace

std::string RoutedExpertPrefix(int layer, int expert) {
  return absl::StrCat("model.layers.", layer, ".mlp.experts.", expert);
}

absl::StatusOr<DenseWeights> LoadDenseWeights(Checkpoint& checkpoint) {
  const ModelConfig& config = checkpoint.config();
  const int64_t hidden = config.hidden_size;
  DenseWeights weights;
  ASSIGN_OR_RETURN(weights.embed_tokens,
                   ReadKept(checkpoint, "model.embed_tokens", config.vocab_size, hidden));
  if (weights.embed_tokens.format == WeightMatrix::Format::kFp8Block) {
    // A lookup table, not a product: rows are widened on use, so keep FP8 ones as float32.
    weights.embed_tokens.values = weights.embed_tokens.Dequantize();
    weights.embed_tokens.fp8 = {};
    weights.embed_tokens.block_scales = {};
    weights.embed_tokens.format = WeightMatrix::Format::kFloat32;
  }
  ASSIGN_OR_RETURN(weights.final_norm, checkpoint.ReadFloat("model.norm.weight", {hidden}));
  ASSIGN_OR_RETURN(weights.lm_head, ReadKept(checkpoint, "lm_head", config.vocab_size, hidden));
  if (weights.lm_head.format == WeightMatrix::Format::kBFloat16 && hidden % 64 == 0) {
    ASSIGN_OR_RETURN(weights.lm_head_packed, kernels::PackedBf16Matrix::Pack(weights.lm_head));
    weights.lm_head.bf16 = {};
  }
  // Layer num_hidden_layers (and beyond) is the MTP module: not part of the main forward pass.
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer);
    LayerWeights layer_weights;
    ASSIGN_OR_RETURN(layer_weights.attention, LoadAttention(checkpoint, prefix, config));
    ASSIGN_OR_RETURN(layer_weights.post_attention_norm,
                     checkpoint.ReadFloat(prefix + ".post_attention_layernorm.weight", {hidden}));
    layer_weights.is_moe = config.IsMoeLayer(layer);
    if (!layer_weights.is_moe) {
      ASSIGN_OR_RETURN(layer_weights.dense_mlp,
                       LoadFeedForward(checkpoint, prefix + ".mlp", hidden, config.intermediate_size));
    } else {
      ASSIGN_OR_RETURN(layer_weights.gate.weight,
                       ReadKept(checkpoint, prefix + ".mlp.gate", config.n_routed_experts, hidden));
      const std::string bias_name = prefix + ".mlp.gate.e_score_correction_bias";
      if (checkpoint.Contains(bias_name)) {
        ASSIGN_OR_RETURN(layer_weights.gate.correction_bias,
                         checkpoint.ReadFloat(bias_name, {config.n_routed_experts}));
      } else if (config.topk_method == "noaux_tc") {
        return absl::NotFoundError(absl::StrCat(
            checkpoint.directory(), ": tensor '", bias_name,
            "' is missing but config.json's topk_method is noaux_tc"));
      }
      if (config.n_shared_experts > 0) {
        ASSIGN_OR_RETURN(layer_weights.shared_expert,
                         LoadFeedForward(checkpoint, prefix + ".mlp.shared_experts", hidden,
                                         static_cast<int64_t>(config.n_shared_experts) *
                                             config.moe_intermediate_size));
      }
    }
    weights.layers.push_back(std::move(layer_weights));
  }
  return weights;
}

absl::StatusOr<FeedForwardWeights> LoadRoutedExpert(Checkpoint& checkpoint, int layer, int expert) {
  const ModelConfig& config = checkpoint.config();
  if (layer < 0 || layer >= config.num_hidden_layers || !config.IsMoeLayer(layer) || expert < 0 ||
      expert >= config.n_routed_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("no routed expert ", expert, " in layer ", layer, " of this model"));
  }
  return LoadFeedForward(checkpoint, RoutedExpertPrefix(layer, expert), config.hidden_size,
                         config.moe_intermediate_size);
}

}  // namespace moemesh::model
