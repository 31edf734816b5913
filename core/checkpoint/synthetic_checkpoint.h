// Random DeepSeek-V3-shaped checkpoints (what `moemesh make-checkpoint` writes): every tensor of
// the Hugging Face layout, MTP layer included, FP8 block-quantized linear weights, with value
// scales chosen so that a forward pass stays finite and its logits moderate (modelled on the
// shared tiny-r1 fixture).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/checkpoint/model_config.h"

namespace moemesh::checkpoint {

// A named model shape for make-checkpoint.
struct CheckpointPreset {
  std::string name;
  ModelConfig config;
  uint64_t default_shard_bytes = 0;
  // Too large to write with its bytes: make-checkpoint writes it only with --sparse.
  bool sparse_only = false;
};

// "tiny" (the shape of ../shared/fixtures/tiny-r1, ~69 MB), "bench" (~1.9 GB, see the .cc) or
// "deepseek-v3-671b" (the released 671B shape, ~688 GB in 163 shards; sparse only).
// Errors: InvalidArgument naming the unknown preset and the known ones.
absl::StatusOr<CheckpointPreset> FindCheckpointPreset(absl::string_view name);
std::vector<std::string> CheckpointPresetNames();

// One tensor of the layout: its name and shape, and how make-checkpoint fills it.
struct TensorSpec {
  enum class Kind {
    kLinear,      // FP8 block weight `name` + `<prefix>.weight_scale_inv`; N(0, std)
    kEmbedding,   // BF16, N(0, std)
    kNorm,        // BF16, N(1, 0.1)
    kGateWeight,  // BF16 mlp.gate.weight, N(0, std)
    kGateBias,    // F32 e_score_correction_bias, N(0, 0.1)
  };
  std::string name;  // full tensor name (for kLinear the ".weight" tensor)
  Kind kind = Kind::kNorm;
  std::vector<int64_t> shape;
  float std = 0.0f;
};

// Every tensor `config` implies, in DeepSeek's file order: embed_tokens, layers 0..L-1
// (norms, self_attn, mlp: dense gate/up/down or MoE gate, bias, experts, shared_experts), the
// MTP layers' extra tensors (enorm, hnorm, eh_proj, shared_head.{norm,head}, embed_tokens)
// followed by their transformer block, then model.norm and lm_head. Scale tensors are implied
// by kLinear entries and not listed.
std::vector<TensorSpec> CheckpointLayout(const ModelConfig& config);

// Bytes of tensor data CheckpointLayout(config) takes with FP8 linear weights (scales included).
uint64_t CheckpointDataBytes(const ModelConfig& config);
// Bytes one TensorSpec takes as make-checkpoint stores it: a kLinear is the FP8 weight plus its
// F32 block scales (`config.quantization`'s block size, 128x128 without it), gate biases F32,
// everything else BF16.
uint64_t TensorDataBytes(const ModelConfig& config, const TensorSpec& spec);

// Writes a random checkpoint of `config` (which should carry quantization) to `directory`
// (must not exist or be empty): shards of at most `shard_bytes` data, index, config.json and
// generation_config.json. Each tensor is drawn from std::mt19937_64 seeded with `seed` and the
// tensor's name, so the bytes depend only on (config, seed, shard_bytes, gate_skew).
//
// gate_skew > 0 makes some routed experts hot (for load-balancing benchmarks: random gate
// weights route almost uniformly): every MoE layer's e_score_correction_bias gets
// gate_skew / (rank + 1) added, rank being the expert's place in a random order drawn per layer
// from (seed, layer), so the hot experts differ by layer. The bias only chooses experts (it
// never weights them), so outputs stay as finite as without. 0 writes the same bytes as before
// the option existed. Measured on the tiny shape (top-4 of 16 experts: uniform share 25%), the
// hottest expert of a layer is chosen by ~45% of random rows at 0 (random gate weights), ~65%
// at 0.6 and ~90% at 1.0. Errors: InvalidArgument for a negative or non-finite gate_skew.
absl::Status WriteRandomCheckpoint(const ModelConfig& config, uint64_t seed, uint64_t shard_bytes,
                                   const std::string& directory, double gate_skew = 0.0);

// The bias increments of gate_skew for one layer (gate_skew / (rank + 1) per expert; all zero
// for gate_skew 0), as WriteRandomCheckpoint adds them to `tensor_name`'s values.
std::vector<float> GateSkewBias(int num_experts, uint64_t seed, const std::string& tensor_name,
                                double gate_skew);

}  // namespace moemesh::checkpoint
