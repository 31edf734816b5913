// Full-size checkpoints without the bytes (`moemesh make-checkpoint --sparse`): the real
// Hugging Face layout of a config (every tensor of CheckpointLayout, FP8 weights with their F32
// `weight_scale_inv` block scales, shards, index, config.json) where each shard has its real
// safetensors header and its real size but a data section that is a hole. A 689 GB DeepSeek-V3
// checkpoint then takes a few MB of disk; reading a tensor returns zeros (FP8 code 0, scale 0:
// a zero weight), which is enough to plan, open and load shares at full size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/checkpoint/model_config.h"

namespace moemesh::checkpoint {

// Which shard (0-based) each tensor of `sizes` (bytes, in file order) goes to so that there are
// exactly `shard_count` shards of about equal size: a tensor goes to the shard its first byte
// falls in when the total is cut into `shard_count` equal parts. Tensors stay in order and
// whole, so shards cut through layers as DeepSeek's do. Requires no tensor larger than
// total / shard_count (else some shard would be empty; the result then has fewer shards).
std::vector<int> BalancedShardAssignment(const std::vector<uint64_t>& sizes, int shard_count);

// Writes the sparse checkpoint of `config` (which must carry quantization) to `directory`
// (must not exist or be empty) in `shard_count` shards named model-XXXXX-of-NNNNNN.safetensors,
// with model.safetensors.index.json (metadata.total_size = the data bytes), config.json and
// generation_config.json. Errors: InvalidArgument for a config without quantization, a
// non-positive shard count or one that leaves a shard empty; FailedPrecondition for a
// non-empty directory; Internal for I/O failures (naming the file).
absl::Status WriteSparseCheckpoint(const ModelConfig& config, int shard_count,
                                   const std::string& directory);

}  // namespace moemesh::checkpoint
