#include "core/placement/cluster_sizing.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint/synthetic_checkpoint.h"

namespace moemesh::placement {
namespace {

using checkpoint::ModelConfig;
using checkpoint::TensorSpec;

constexpr uint64_t kGiB = 1ull << 30;

// Bytes of one tensor as the checkpoint stores it (a BF16 cast stores linear weights as BF16).
uint64_t StoredBytes(const ModelConfig& config, const TensorSpec& spec) {
  if (spec.kind == TensorSpec::Kind::kLinear && !config.quantization.has_value()) {
    uint64_t elements = 1;
    for (int64_t dim : spec.shape) elements *= static_cast<uint64_t>(dim);
    return 2 * elements;
  }
  return checkpoint::TensorDataBytes(config, spec);
}

// The layer of "model.layers.<n>.…", or -1 for tensors outside the layers.
int LayerOf(const std::string& name) {
  constexpr absl::string_view kPrefix = "model.layers.";
  if (!absl::StartsWith(name, kPrefix)) return -1;
  const size_t end = name.find('.', kPrefix.size());
  int layer = -1;
  if (!absl::SimpleAtoi(name.substr(kPrefix.size(), end - kPrefix.size()), &layer)) return -1;
  return layer;
}

uint64_t RoundUpToGiB(uint64_t bytes) { return (bytes + kGiB - 1) / kGiB * kGiB; }

}  // namespace

absl::StatusOr<ClusterSizing> SizeCluster(const SizingInput& input) {
  const ModelConfig& config = input.config;
  if (input.gpu_memory_bytes == 0) return absl::InvalidArgumentError("GPU memory must be positive");
  if (input.expert_nodes < 0 || input.attention_nodes <= 0 || input.redundant_experts < 0 ||
      input.max_batch_tokens <= 0 || input.cache_block_size <= 0) {
    return absl::InvalidArgumentError(
        "expert nodes and redundant experts must be >= 0; attention nodes, max batch tokens and "
        "the cache block size > 0");
  }
  if (!(input.reserve_fraction >= 0.0 && input.reserve_fraction < 1.0)) {
    return absl::InvalidArgumentError("the GPU memory reserve must be in [0, 1)");
  }
  const std::vector<int> moe_layers = config.MoeLayers();
  if (config.n_routed_experts <= 0 || moe_layers.empty()) {
    return absl::InvalidArgumentError("the model has no routed experts to place");
  }

  ClusterSizing sizing;
  sizing.moe_layers = static_cast<int>(moe_layers.size());
  for (const TensorSpec& spec : checkpoint::CheckpointLayout(config)) {
    const uint64_t bytes = StoredBytes(config, spec);
    sizing.checkpoint_bytes += bytes;
    const int layer = LayerOf(spec.name);
    if (layer >= config.num_hidden_layers) {
      sizing.mtp_bytes += bytes;
    } else if (absl::StrContains(spec.name, ".mlp.experts.")) {
      sizing.expert_bytes_total += bytes;
    } else {
      sizing.attention_weight_bytes += bytes;
    }
  }
  const uint64_t routed_experts =
      static_cast<uint64_t>(config.n_routed_experts) * moe_layers.size();
  sizing.bytes_per_routed_expert = sizing.expert_bytes_total / routed_experts;

  // Attention node: weights, the step's float32 workspace, the rest is latent cache. Workspace
  // per batch token: the logits row (vocab), the dense MLP's gate and up rows (2 x
  // intermediate), the absorbed-MLA query and output per head (heads x (kv_lora_rank +
  // qk_rope_head_dim) and heads x kv_lora_rank), and 4 hidden-size buffers (residual, norm,
  // attention output, routed partial sums).
  sizing.usable_gpu_bytes = static_cast<uint64_t>(static_cast<double>(input.gpu_memory_bytes) *
                                                  (1.0 - input.reserve_fraction));
  sizing.kv_bytes_per_token = static_cast<uint64_t>(config.num_hidden_layers) *
                              (config.kv_lora_rank + config.qk_rope_head_dim) * sizeof(float);
  const uint64_t workspace_floats_per_token =
      static_cast<uint64_t>(config.vocab_size) + 2ull * config.intermediate_size +
      static_cast<uint64_t>(config.num_attention_heads) *
          (2ull * config.kv_lora_rank + config.qk_rope_head_dim) +
      4ull * config.hidden_size;
  sizing.activation_bytes =
      static_cast<uint64_t>(input.max_batch_tokens) * workspace_floats_per_token * sizeof(float);
  const uint64_t attention_fixed = sizing.attention_weight_bytes + sizing.activation_bytes;
  const uint64_t block_bytes = sizing.kv_bytes_per_token * input.cache_block_size;
  if (attention_fixed + block_bytes > sizing.usable_gpu_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "an attention node needs ", attention_fixed, " bytes (weights ",
        sizing.attention_weight_bytes, " + workspace ", sizing.activation_bytes,
        ") plus its cache, more than the ", sizing.usable_gpu_bytes, " usable bytes of one GPU"));
  }
  const uint64_t cache_blocks = (sizing.usable_gpu_bytes - attention_fixed) / block_bytes;
  sizing.cache_tokens_per_attention_node =
      static_cast<int64_t>(cache_blocks) * input.cache_block_size;
  sizing.kv_cache_bytes_per_attention_node = cache_blocks * block_bytes;
  sizing.attention_nodes = input.attention_nodes;

  // Expert node: a physical expert slot per MoE layer costs one expert of every MoE layer.
  const uint64_t slot_bytes = sizing.bytes_per_routed_expert * moe_layers.size();
  sizing.max_experts_per_node_per_layer = static_cast<int>(std::min<uint64_t>(
      sizing.usable_gpu_bytes / slot_bytes, static_cast<uint64_t>(config.n_routed_experts) +
                                                input.redundant_experts));
  if (sizing.max_experts_per_node_per_layer == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "one GPU (", sizing.usable_gpu_bytes, " usable bytes) cannot hold one expert of each of ",
        moe_layers.size(), " MoE layers (", slot_bytes, " bytes)"));
  }
  const int physical = config.n_routed_experts + input.redundant_experts;
  sizing.min_expert_nodes = (physical + sizing.max_experts_per_node_per_layer - 1) /
                            sizing.max_experts_per_node_per_layer;
  sizing.max_useful_expert_nodes = physical;
  sizing.expert_nodes = input.expert_nodes == 0 ? sizing.min_expert_nodes : input.expert_nodes;
  if (sizing.expert_nodes < sizing.min_expert_nodes) {
    return absl::FailedPreconditionError(absl::StrCat(
        sizing.expert_nodes, " expert nodes cannot hold ", physical,
        " physical experts per layer: one GPU holds ", sizing.max_experts_per_node_per_layer,
        " per layer, so at least ", sizing.min_expert_nodes, " are needed"));
  }

  PlannerInput planner;
  planner.num_experts = config.n_routed_experts;
  planner.load.assign(moe_layers.size(), std::vector<double>(config.n_routed_experts, 0.0));
  planner.redundant_experts = input.redundant_experts;
  for (int node = 0; node < sizing.expert_nodes; ++node) {
    planner.nodes.push_back(
        {absl::StrCat("expert-", node), sizing.max_experts_per_node_per_layer});
  }
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(planner);
  if (!plan.ok()) return plan.status();
  sizing.placement = *std::move(plan);
  sizing.redundant_experts = sizing.placement.redundant_experts;
  sizing.physical_experts_per_layer = config.n_routed_experts + sizing.redundant_experts;

  std::vector<uint64_t> held(sizing.expert_nodes, 0);
  for (const LayerPlacement& layer : sizing.placement.layers) {
    std::vector<int> per_node(sizing.expert_nodes, 0);
    for (const std::vector<int>& replicas : layer.replicas) {
      for (int node : replicas) {
        ++per_node[node];
        ++held[node];
      }
    }
    sizing.experts_per_node_per_layer =
        std::max(sizing.experts_per_node_per_layer,
                 *std::max_element(per_node.begin(), per_node.end()));
  }
  sizing.expert_node_weight_bytes =
      *std::max_element(held.begin(), held.end()) * sizing.bytes_per_routed_expert;

  sizing.attention_pod.memory_bytes =
      RoundUpToGiB(sizing.attention_weight_bytes + sizing.kv_cache_bytes_per_attention_node +
                   sizing.activation_bytes + input.pod_memory_overhead_bytes);
  sizing.expert_pod.memory_bytes =
      RoundUpToGiB(sizing.expert_node_weight_bytes + input.pod_memory_overhead_bytes);
  return sizing;
}

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) ||
                                  text[digits] == '.')) {
    ++digits;
  }
  double number = 0;
  if (digits == 0 || !absl::SimpleAtod(text.substr(0, digits), &number) || number < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a byte size (e.g. 80GiB)"));
  }
  const std::string unit = absl::AsciiStrToLower(text.substr(digits));
  double factor = 0;
  if (unit.empty() || unit == "b") factor = 1;
  const char* const kPrefixes = "kmgt";
  for (int i = 0; i < 4; ++i) {
    const std::string p(1, kPrefixes[i]);
    if (unit == p || unit == p + "b") factor = std::pow(1000.0, i + 1);
    if (unit == p + "ib") factor = std::pow(1024.0, i + 1);
  }
  if (factor == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"));
  }
  return static_cast<uint64_t>(std::llround(number * factor));
}

}  // namespace moemesh::placement
