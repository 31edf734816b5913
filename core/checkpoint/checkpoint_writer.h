// Writing DeepSeek-V3 checkpoints in the Hugging Face layout: safetensors shards
// `model-XXXXX-of-NNNNNN.safetensors` (DeepSeek's naming: 5-digit index, 6-digit count),
// `model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map"}) and config.json.
// Used by `moemesh make-checkpoint` and `moemesh convert`, and by tests that need small or
// deliberately broken checkpoints.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/checkpoint/dtype.h"
#include "core/checkpoint/model_config.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {

// One tensor ready to be written: `data` holds the little-endian elements of `dtype` in
// row-major `shape` order (its size must be product(shape) * DTypeSize(dtype)).
struct TensorBytes {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// Writes one safetensors file (the format of huggingface/safetensors): 8-byte little-endian
// header length, the JSON header with the tensors in the order given (their data laid out in
// that order, so header order equals offset order) followed by "__metadata__":
// {"format": "pt"}, padded with spaces to a multiple of 8 bytes, then the data.
// Errors: InvalidArgument for a byte count that disagrees with the shape or a duplicate name;
// Internal for I/O failures (naming `path`).
absl::Status WriteSafetensorsFile(const std::string& path, const std::vector<TensorBytes>& tensors);

// FP8 e4m3 block quantization as DeepSeek-V3 stores linear weights: for each
// [block_rows x block_cols] block (edge blocks partial), scale = amax / 448 (1 for an all-zero
// block) and code = e4m3(value / scale). `scales` has shape
// [ceil(rows / block_rows), ceil(cols / block_cols)] (the checkpoint's `weight_scale_inv`).
struct Fp8BlockQuantized {
  std::vector<uint8_t> codes;  // [rows, cols]
  std::vector<float> scales;
};
Fp8BlockQuantized QuantizeFp8Block(const float* values, int64_t rows, int64_t cols,
                                   int block_rows = 128, int block_cols = 128);

// Little-endian bytes of float32 values as BF16 (round to nearest even) or F32.
std::vector<uint8_t> ToBF16Bytes(const float* values, int64_t count);
std::vector<uint8_t> ToF32Bytes(const float* values, int64_t count);

// Streams tensors into size-bounded shards in a new checkpoint directory. Tensors are added in
// file order; a new shard starts when the next tensor would push the current one past
// `shard_bytes` of data (a tensor larger than the budget gets a shard of its own), so shard
// boundaries may cut through layers. At most one shard's data is held in memory.
// Finish() names the shards model-00001-of-00000N.safetensors ... and writes the index.
class CheckpointWriter {
 public:
  // Creates `directory` (and parents). Errors: FailedPrecondition when it exists and is not
  // empty (stale shards of another count would otherwise linger); InvalidArgument for a zero
  // budget.
  static absl::StatusOr<std::unique_ptr<CheckpointWriter>> Create(const std::string& directory,
                                                                  uint64_t shard_bytes);
  ~CheckpointWriter();

  // Adds one tensor. Errors: InvalidArgument for a duplicate name or a size/shape mismatch;
  // Internal for I/O failures.
  absl::Status Add(TensorBytes tensor);
  // Conveniences: float32 `values` ([shape] row-major) stored as BF16 / F32.
  absl::Status AddBF16(const std::string& name, std::vector<int64_t> shape, const float* values);
  absl::Status AddF32(const std::string& name, std::vector<int64_t> shape, const float* values);
  // Adds `<prefix>.weight` ([rows, cols] F8_E4M3) and `<prefix>.weight_scale_inv` (F32 block
  // scales) quantized from float32 `values` with QuantizeFp8Block.
  absl::Status AddFp8Linear(const std::string& prefix, int64_t rows, int64_t cols,
                            const float* values, int block_rows = 128, int block_cols = 128);

  // Writes the last shard, renames the shards to their final names and writes
  // model.safetensors.index.json. No tensor may be added afterwards.
  absl::Status Finish();

  // Tensor data bytes so far (the index's metadata.total_size once finished).
  uint64_t total_bytes() const { return total_bytes_; }
  // Final shard file names (after Finish) in order.
  const std::vector<std::string>& shard_names() const { return shard_names_; }

 private:
  CheckpointWriter() = default;
  absl::Status FlushShard();

  std::string directory_;
  uint64_t shard_bytes_ = 0;
  std::vector<TensorBytes> pending_;
  uint64_t pending_bytes_ = 0;
  uint64_t total_bytes_ = 0;
  std::vector<std::string> temp_names_;      // shards written so far, temporary names
  std::map<std::string, int> tensor_shard_;  // tensor name -> shard number (0-based)
  std::vector<std::string> shard_names_;
  bool finished_ = false;
};

// "model-00002-of-000163.safetensors" for shard 2 of 163 (1-based, DeepSeek's naming).
std::string ShardFileName(int index, int count);

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}
// with the tensor names sorted.
absl::Status WriteIndexFile(const std::string& directory, uint64_t total_size,
                            const std::map<std::string, std::string>& weight_map);

// config.json text for `config` in the Hugging Face DeepSeek-V3 layout (the fields and order of
// deepseek-ai/DeepSeek-V3's config.json; quantization_config only when config.quantization).
nlohmann::ordered_json ModelConfigToJson(const ModelConfig& config);

// Writes `json` to `path` pretty-printed (2-space indent). Errors: Internal naming the path.
absl::Status WriteJsonFile(const std::string& path, const nlohmann::ordered_json& json);

// Writes config.json (ModelConfigToJson) and generation_config.json (DeepSeek-R1's sampling
// defaults: temperature 0.6, top_p 0.95) into `directory`. Errors: as WriteJsonFile.
absl::Status WriteConfigFiles(const std::string& directory, const ModelConfig& config);

}  // namespace moemesh::checkpoint
