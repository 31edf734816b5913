// DeepSeek-V3 `config.json` (Hugging Face layout, model_type "deepseek_v3").
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moemesh::checkpoint {

// `rope_scaling` with type "yarn" (DeepSeek-V3 inference/model.py precompute_freqs_cis).
struct YarnRopeScaling {
  double factor = 1.0;
  int original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
};

// `quantization_config` of FP8 checkpoints: e4m3 weights with one float32 `weight_scale_inv`
// per block of [block_rows, block_cols] weight elements.
struct Fp8Quantization {
  int block_rows = 128;
  int block_cols = 128;
};

// Every field the forward pass needs. Names follow config.json.
struct ModelConfig {
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;      // dense MLP layers
  int moe_intermediate_size = 0;  // each routed expert; shared expert is n_shared_experts times it
  int num_hidden_layers = 0;      // main model; layer index num_hidden_layers is the MTP module
  int num_nextn_predict_layers = 0;
  int num_attention_heads = 0;
  int q_lora_rank = 0;  // 0 means no query compression (wq directly)
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";
  std::string topk_method = "noaux_tc";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int max_position_embeddings = 4096;
  std::optional<YarnRopeScaling> rope_scaling;
  std::optional<Fp8Quantization> quantization;
  int bos_token_id = 0;
  int eos_token_id = 1;
  bool tie_word_embeddings = false;

  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // True for layers whose FFN is the routed MoE (DeepSeek-V3: layer >= first_k_dense_replace).
  bool IsMoeLayer(int layer) const {
    return layer >= first_k_dense_replace && (layer % moe_layer_freq) == 0;
  }
  // The MoE layers of the main model, ascending.
  std::vector<int> MoeLayers() const;
  int NumMoeLayers() const { return static_cast<int>(MoeLayers().size()); }
};

// Parses config.json text. Errors: InvalidArgument naming the missing or ill-typed field, or a
// model_type other than deepseek_v3; `source` (a path) prefixes every message.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);
// Reads and parses `path`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

}  // namespace moemesh::checkpoint
