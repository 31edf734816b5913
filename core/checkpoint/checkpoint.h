// A DeepSeek-V3 checkpoint directory in the Hugging Face layout: config.json,
// model-XXXXX-of-NNNNNN.safetensors shards and model.safetensors.index.json (or a single
// model.safetensors). Shards are memory-mapped; only the tensors asked for are read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/checkpoint/model_config.h"
#include "core/checkpoint/safetensors.h"
#include "core/checkpoint/weight_matrix.h"

namespace moemesh::checkpoint {

// One byte range read from a shard (for accounting and tests).
struct ByteRange {
  std::string file;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class Checkpoint {
 public:
  // Reads config.json and the index, and maps and validates every shard header (no tensor data
  // is touched). Errors name the file and tensor at fault.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& directory);

  const std::string& directory() const { return directory_; }
  const ModelConfig& config() const { return config_; }
  // True when the checkpoint stores FP8 block weights (config.json has quantization_config).
  bool is_fp8() const { return config_.quantization.has_value(); }

  // Where a tensor lives. Errors: NotFound when the index does not list it or its shard lacks it.
  absl::StatusOr<const TensorInfo*> Find(const std::string& name) const;
  bool Contains(const std::string& name) const { return weight_map_.count(name) > 0; }
  // All tensor names of the index, sorted.
  std::vector<std::string> TensorNames() const;
  // The shard file name holding `name` ("" if unknown).
  std::string ShardOf(const std::string& name) const;

  // Reads a tensor of any dtype as float32 after checking its shape equals `expected_shape`
  // (what config.json implies). FP8 tensors come back as raw e4m3 values, unscaled.
  absl::StatusOr<std::vector<float>> ReadFloat(const std::string& name,
                                               const std::vector<int64_t>& expected_shape);

  // Reads the linear weight `<prefix>.weight` of shape [rows, cols]: FP8 (plus
  // `<prefix>.weight_scale_inv` of shape [ceil(rows/128), ceil(cols/128)]) stays FP8 unless
  // `dequantize`; F16/F32 are widened to float32, BF16 too unless `keep_bf16` (then the matrix
  // holds the checkpoint's bf16 bits, WeightMatrix::Format::kBFloat16).
  absl::StatusOr<WeightMatrix> ReadWeight(const std::string& prefix, int64_t rows, int64_t cols,
                                          bool dequantize = false, bool keep_bf16 = false);

  // Every byte range read so far, in order, and their total.
  std::vector<ByteRange> ReadRanges() const;
  uint64_t BytesRead() const;

 private:
  Checkpoint() = default;
  absl::StatusOr<const uint8_t*> ReadRaw(const TensorInfo& info, const std::string& name);

  std::string directory_;
  ModelConfig config_;
  std::map<std::string, std::string> weight_map_;  // tensor name -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
  mutable absl::Mutex mutex_;
  std::vector<ByteRange> read_ranges_ ABSL_GUARDED_BY(mutex_);
};

// "[a, b, c]" for error messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace moemesh::checkpoint
