// The BF16 cast of an FP8 DeepSeek-V3 checkpoint, as DeepSeek's inference/fp8_cast_bf16.py
// produces it: every F8_E4M3 weight dequantized with its 128x128 block `weight_scale_inv`
// (fp8 * scale in float32) and rounded to BF16 (nearest even); no `weight_scale_inv` tensors;
// every other tensor copied byte for byte; shards keep their names; the index is rewritten.
// config.json loses `quantization_config`; other files (tokenizer, generation_config, ...) are
// copied.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace moemesh::checkpoint {

// Converts `input_directory` into `output_directory` (must not exist or be empty), one shard at
// a time: memory holds one output shard. Errors: those of Checkpoint::Open on the input
// (naming file and tensor), FailedPrecondition when the input is not FP8 or the output is not
// empty, InvalidArgument for an FP8 tensor without its scale, Internal for I/O failures.
absl::Status ConvertCheckpointToBf16(const std::string& input_directory,
                                     const std::string& output_directory);

}  // namespace moemesh::checkpoint
