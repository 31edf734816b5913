#include "core/checkpoint/model_config.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/json_field.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {
namespace {

using nlohmann::json;

// Reads an optional numeric field into `out`; errors if present with the wrong type.
template <typename T>
absl::Status ReadNumber(const json& object, const char* key, bool required, T& out,
                        absl::string_view source) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (required) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": missing field '", key, "'"));
    }
    return absl::OkStatus();
  }
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", key, "' must be a number, got ", it->dump()));
  }
  // A hostile config must not reach an out-of-range conversion (undefined behaviour).
  const double value = it->get<double>();
  bool fits = std::isfinite(value);
  if constexpr (std::is_integral_v<T>) {
    fits = fits && value == std::floor(value) &&
           value >= static_cast<double>(std::numeric_limits<T>::min()) &&
           value < std::ldexp(1.0, std::numeric_limits<T>::digits);
    if (fits && it->is_number_unsigned()) {
      fits = it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    }
  } else {
    fits = fits && std::fabs(value) <= static_cast<double>(std::numeric_limits<T>::max());
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "' is out of range: ",
                                                   it->dump()));
  }
  out = it->is_number_integer() ? static_cast<T>(it->get<int64_t>()) : static_cast<T>(value);
  return absl::OkStatus();
}

}  // namespace

std::vector<int> ModelConfig::MoeLayers() const {
  std::vector<int> layers;
  for (int layer = 0; layer < num_hidden_layers; ++layer) {
    if (IsMoeLayer(layer)) layers.push_back(layer);
  }
  return layers;
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  const std::string model_type = FieldOr(root, "model_type", std::string());
  if (model_type != "deepseek_v3") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": model_type is '", model_type, "', moemesh serves only 'deepseek_v3'"));
  }
  ModelConfig config;
  struct IntField {
    const char* key;
    int* target;
    bool required;
  };
  const IntField int_fields[] = {
      {"vocab_size", &config.vocab_size, true},
      {"hidden_size", &config.hidden_size, true},
      {"intermediate_size", &config.intermediate_size, true},
      {"moe_intermediate_size", &config.moe_intermediate_size, true},
      {"num_hidden_layers", &config.num_hidden_layers, true},
      {"num_nextn_predict_layers", &config.num_nextn_predict_layers, false},
      {"num_attention_heads", &config.num_attention_heads, true},
      {"q_lora_rank", &config.q_lora_rank, false},
      {"kv_lora_rank", &config.kv_lora_rank, true},
      {"qk_nope_head_dim", &config.qk_nope_head_dim, true},
      {"qk_rope_head_dim", &config.qk_rope_head_dim, true},
      {"v_head_dim", &config.v_head_dim, true},
      {"n_routed_experts", &config.n_routed_experts, true},
      {"n_shared_experts", &config.n_shared_experts, false},
      {"num_experts_per_tok", &config.num_experts_per_tok, true},
      {"n_group", &config.n_group, false},
      {"topk_group", &config.topk_group, false},
      {"first_k_dense_replace", &config.first_k_dense_replace, false},
      {"moe_layer_freq", &config.moe_layer_freq, false},
      {"max_position_embeddings", &config.max_position_embeddings, false},
      {"bos_token_id", &config.bos_token_id, false},
      {"eos_token_id", &config.eos_token_id, false},
  };
  for (const IntField& field : int_fields) {
    if (absl::Status status = ReadNumber(root, field.key, field.required, *field.target, source);
        !status.ok()) {
      return status;
    }
  }
  if (auto status = ReadNumber(root, "routed_scaling_factor", false, config.routed_scaling_factor,
                               source);
      !status.ok())
    return status;
  if (auto status = ReadNumber(root, "rms_norm_eps", false, config.rms_norm_eps, source);
      !status.ok())
    return status;
  if (auto status = ReadNumber(root, "rope_theta", false, config.rope_theta, source); !status.ok())
    return status;
  config.norm_topk_prob = FieldOr(root, "norm_topk_prob", true);
  config.tie_word_embeddings = FieldOr(root, "tie_word_embeddings", false);
  config.scoring_func = FieldOr(root, "scoring_func", std::string("sigmoid"));
  config.topk_method = FieldOr(root, "topk_method", std::string("noaux_tc"));
  if (config.scoring_func != "sigmoid" && config.scoring_func != "softmax") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": unsupported scoring_func '", config.scoring_func, "'"));
  }

  if (auto it = root.find("rope_scaling"); it != root.end() && it->is_object()) {
    const std::string type =
        FieldOr(*it, "type", FieldOr(*it, "rope_type", std::string()));
    if (type != "yarn") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": rope_scaling type '", type, "' is not supported (only yarn)"));
    }
    YarnRopeScaling yarn;
    for (auto [key, target] : {std::pair{"factor", &yarn.factor},
                               std::pair{"beta_fast", &yarn.beta_fast},
                               std::pair{"beta_slow", &yarn.beta_slow},
                               std::pair{"mscale", &yarn.mscale},
                               std::pair{"mscale_all_dim", &yarn.mscale_all_dim}}) {
      if (auto status = ReadNumber(*it, key, false, *target, absl::StrCat(source, " rope_scaling"));
          !status.ok())
        return status;
    }
    if (auto status = ReadNumber(*it, "original_max_position_embeddings", true,
                                 yarn.original_max_position_embeddings,
                                 absl::StrCat(source, " rope_scaling"));
        !status.ok())
      return status;
    config.rope_scaling = yarn;
  }

  if (auto it = root.find("quantization_config"); it != root.end() && it->is_object()) {
    const std::string method = it->value("quant_method", std::string());
    if (method != "fp8") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": quantization_config.quant_method '", method,
                       "' is not supported (only fp8)"));
    }
    Fp8Quantization quantization;
    if (auto block = it->find("weight_block_size"); block != it->end()) {
      auto positive_int = [](const json& v) {
        return v.is_number_integer() && v.get<int64_t>() > 0 &&
               v.get<int64_t>() <= std::numeric_limits<int>::max() &&
               !(v.is_number_unsigned() &&
                 v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max()));
      };
      if (!block->is_array() || block->size() != 2 || !positive_int((*block)[0]) ||
          !positive_int((*block)[1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": quantization_config.weight_block_size must be two positive integers"));
      }
      quantization.block_rows = (*block)[0].get<int>();
      quantization.block_cols = (*block)[1].get<int>();
    }
    config.quantization = quantization;
  }

  // Consistency checks that would otherwise surface as out-of-bounds reads later. They run in
  // order and stop at the first failure: later checks divide by fields the earlier ones vouch
  // for (an eagerly built list divided by a zero n_group, found by fuzz_checkpoint).
  const std::pair<std::function<bool()>, absl::string_view> checks[] = {
      {[&] { return config.hidden_size > 0 && config.vocab_size > 0 && config.num_hidden_layers > 0; },
       "hidden_size, vocab_size and num_hidden_layers must be positive"},
      {[&] { return config.num_attention_heads > 0 && config.kv_lora_rank > 0; },
       "num_attention_heads and kv_lora_rank must be positive"},
      {[&] { return config.qk_rope_head_dim % 2 == 0; }, "qk_rope_head_dim must be even"},
      {[&] { return config.n_group > 0 && config.n_routed_experts % config.n_group == 0; },
       "n_routed_experts must be a multiple of n_group"},
      {[&] { return config.topk_group >= 1 && config.topk_group <= config.n_group; },
       "topk_group must be in [1, n_group]"},
      {[&] {
         const int64_t selectable = static_cast<int64_t>(config.topk_group) *
                                    (config.n_routed_experts / config.n_group);
         return config.num_experts_per_tok >= 1 && config.num_experts_per_tok <= selectable;
       },
       "num_experts_per_tok exceeds the experts of the selected groups"},
      {[&] { return config.moe_layer_freq >= 1; }, "moe_layer_freq must be >= 1"},
  };
  for (const auto& [holds, what] : checks) {
    if (!holds()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  }
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << file.rdbuf();
  return ParseModelConfig(buffer.str(), path);
}

}  // namespace moemesh::checkpoint
