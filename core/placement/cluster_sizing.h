// Sizing a moemesh deployment of a DeepSeek-V3-architecture model on GPUs of a given memory
// (`moemesh plan`, and the Kubernetes overlay it writes): bytes of attention and routed-expert
// weights as the checkpoint stores them (FP8 e4m3 plus F32 128x128 block scales, BF16
// embeddings/norms/gate), the latent KV cache per token (core/model/latent_cache.h: float32
// kv_norm(c_kv) [kv_lora_rank] and k_pe [qk_rope_head_dim] per main-model layer), how many
// physical experts per MoE layer an expert node can hold, the cache capacity of an attention
// node, an expert placement (PlanPlacement with uniform load) and each pod's resources.
//
// One expert node or attention node = one process = one GPU of `gpu_memory_bytes`. The MTP
// module (layer num_hidden_layers) is not served and is counted apart.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/model_config.h"
#include "core/placement/planner.h"

namespace moemesh::placement {

struct SizingInput {
  checkpoint::ModelConfig config;
  uint64_t gpu_memory_bytes = 0;   // per GPU (e.g. 80 GiB)
  int expert_nodes = 0;            // 0: the fewest that hold every expert (plus redundancy)
  int attention_nodes = 1;
  int redundant_experts = 0;       // redundant physical experts per MoE layer (EPLB)
  int64_t max_batch_tokens = 512;  // tokens per attention-node step (decode + chunked prefill)
  // Part of each GPU kept free: CUDA context, NCCL buffers, allocator fragmentation.
  double reserve_fraction = 0.1;
  int cache_block_size = 64;       // the attention node's --cache-block-size
  // Host memory a pod requests beyond the bytes it holds (process, gRPC buffers, page cache of
  // the shard being read).
  uint64_t pod_memory_overhead_bytes = 4ull << 30;
};

// Resources one pod of a role requests (requests = limits).
struct PodResources {
  int gpus = 1;
  uint64_t memory_bytes = 0;  // whole GiB: held bytes + overhead, rounded up
};

struct ClusterSizing {
  // Weights (bytes as stored: FP8 linear weights with their F32 block scales).
  int moe_layers = 0;                    // main-model MoE layers (58 for DeepSeek-V3)
  uint64_t bytes_per_routed_expert = 0;  // gate_proj + up_proj + down_proj with scales
  uint64_t expert_bytes_total = 0;       // every routed expert of every main-model MoE layer
  uint64_t attention_weight_bytes = 0;   // what an attention node holds: the rest of the main model
  uint64_t mtp_bytes = 0;                // the MTP module (not served)
  uint64_t checkpoint_bytes = 0;         // all tensors (= index metadata.total_size)

  // Attention pool.
  uint64_t usable_gpu_bytes = 0;            // gpu_memory * (1 - reserve_fraction)
  uint64_t kv_bytes_per_token = 0;          // latent cache, all main-model layers, float32
  uint64_t activation_bytes = 0;            // step workspace for max_batch_tokens (see .cc)
  int64_t cache_tokens_per_attention_node = 0;  // --cache-tokens (multiple of the block size)
  uint64_t kv_cache_bytes_per_attention_node = 0;
  int attention_nodes = 0;

  // Expert pool.
  int max_experts_per_node_per_layer = 0;   // what one GPU can hold per MoE layer
  int min_expert_nodes = 0;                 // fewest nodes holding every physical expert
  // Most nodes worth running: one per physical expert of a layer (n_routed + requested
  // redundant), since a node holds at least one expert per layer.
  int max_useful_expert_nodes = 0;
  int expert_nodes = 0;
  int redundant_experts = 0;                // per layer, as the placement used it
  int physical_experts_per_layer = 0;       // n_routed_experts + redundant_experts
  int experts_per_node_per_layer = 0;       // the most any node holds in one layer
  uint64_t expert_node_weight_bytes = 0;    // the most any node holds, all layers
  PlacementPlan placement;                  // layers in config.MoeLayers() order

  PodResources attention_pod;
  PodResources expert_pod;
};

// Errors: InvalidArgument for a non-positive GPU memory or node count, a reserve outside
// [0, 1), or a config without routed experts; FailedPrecondition when the attention weights
// and workspace do not fit one GPU, when one GPU cannot hold one expert of every layer, or when
// `expert_nodes` is below the fewest that hold every physical expert (the message gives it).
absl::StatusOr<ClusterSizing> SizeCluster(const SizingInput& input);

// "80GiB", "80G" (= GB, 10^9), "81920MiB", "85899345920" -> bytes. Units: B, KB/MB/GB/TB
// (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024); G/M/K/T alone mean GB/MB/KB/TB.
// Errors: InvalidArgument naming the text.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);

}  // namespace moemesh::placement
