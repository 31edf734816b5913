#include "core/checkpoint/checkpoint.h"

#include <sys/mman.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {
namespace fs = std::filesystem;

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::vector<float> WeightMatrix::Dequantize() const {
  if (format == Format::kFloat32) return values;
  std::vector<float> out(static_cast<size_t>(rows * cols));
  if (format == Format::kBFloat16) {
    for (int64_t i = 0; i < rows * cols; ++i) out[i] = BFloat16ToFloat(bf16[i]);
    return out;
  }
  const int64_t scale_columns = scale_cols();
  for (int64_t row = 0; row < rows; ++row) {
    const float* scale_row = block_scales.data() + (row / block_rows) * scale_columns;
    for (int64_t col = 0; col < cols; ++col) {
      out[row * cols + col] = Fp8E4M3ToFloat(fp8[row * cols + col]) * scale_row[col / block_cols];
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& directory) {
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->directory_ = directory;
  absl::StatusOr<ModelConfig> config = LoadModelConfig((fs::path(directory) / "config.json").string());
  if (!config.ok()) return config.status();
  checkpoint->config_ = *std::move(config);

  const fs::path index_path = fs::path(directory) / "model.safetensors.index.json";
  std::set<std::string> shard_names;
  if (fs::exists(index_path)) {
    std::ifstream stream(index_path);
    std::stringstream buffer;
    buffer << stream.rdbuf();
    nlohmann::json index = nlohmann::json::parse(buffer.str(), nullptr, false);
    if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::DataLossError(
          absl::StrCat(index_path.string(), ": not JSON with a \"weight_map\" object"));
    }
    for (auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::DataLossError(absl::StrCat(index_path.string(), ": tensor '", name,
                                                "' maps to a non-string shard"));
      }
      const std::string shard_name = shard.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::DataLossError(absl::StrCat(index_path.string(), ": tensor '", name,
                                                "' names shard '", shard_name,
                                                "' outside the checkpoint directory"));
      }
      checkpoint->weight_map_[name] = shard_name;
      shard_names.insert(shard_name);
    }
  } else if (fs::exists(fs::path(directory) / "model.safetensors")) {
    shard_names.insert("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(
        directory, ": neither model.safetensors.index.json nor model.safetensors exists"));
  }

  const bool has_index = fs::exists(index_path);
  for (const std::string& shard_name : shard_names) {
    const std::string shard_path = (fs::path(directory) / shard_name).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard = SafetensorsFile::Open(shard_path);
    if (!shard.ok()) {
      if (has_index && absl::IsNotFound(shard.status())) {
        // Name one tensor the index expects there, so the message says what is missing.
        std::string example;
        for (const auto& [name, file] : checkpoint->weight_map_) {
          if (file == shard_name) {
            example = name;
            break;
          }
        }
        return absl::NotFoundError(absl::StrCat(shard_path, ": shard listed in ",
                                                index_path.string(), " (e.g. for tensor '",
                                                example, "') cannot be opened: ",
                                                shard.status().message()));
      }
      return shard.status();
    }
    if (!has_index) {
      for (const auto& [name, info] : (*shard)->tensors()) checkpoint->weight_map_[name] = shard_name;
    }
    checkpoint->shards_[shard_name] = *std::move(shard);
  }
  // Every tensor the index lists must be in the shard it names (headers only; cheap).
  for (const auto& [name, shard_name] : checkpoint->weight_map_) {
    const SafetensorsFile& shard = *checkpoint->shards_.at(shard_name);
    if (shard.Find(name) == nullptr) {
      return absl::NotFoundError(absl::StrCat(shard.path(), ": tensor '", name, "' is listed in ",
                                              index_path.string(),
                                              " for this shard but the shard does not contain it"));
    }
  }
  return checkpoint;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Find(const std::string& name) const {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(
        absl::StrCat((fs::path(directory_) / "model.safetensors.index.json").string(),
                     ": tensor '", name, "' is not listed in the checkpoint"));
  }
  const SafetensorsFile& shard = *shards_.at(it->second);
  const TensorInfo* info = shard.Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(shard.path(), ": tensor '", name,
                                            "' is listed in the index for this shard but the "
                                            "shard does not contain it"));
  }
  return info;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& [name, shard] : weight_map_) names.push_back(name);
  return names;
}

std::string Checkpoint::ShardOf(const std::string& name) const {
  auto it = weight_map_.find(name);
  return it == weight_map_.end() ? std::string() : it->second;
}

absl::StatusOr<const uint8_t*> Checkpoint::ReadRaw(const TensorInfo& info,
                                                   const std::string& name) {
  const SafetensorsFile& shard = *shards_.at(weight_map_.at(name));
  const uint8_t* data = shard.Data(info);
  // Ask the kernel for exactly this range up front (the mapping is MADV_RANDOM otherwise).
  const uintptr_t page = 4096;
  const uintptr_t start = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(start),
            reinterpret_cast<uintptr_t>(data) + (info.data_end - info.data_begin) - start,
            MADV_WILLNEED);
  absl::MutexLock lock(&mutex_);
  read_ranges_.push_back(ByteRange{shard.path(), info.data_begin, info.data_end});
  return data;
}

absl::StatusOr<std::vector<float>> Checkpoint::ReadFloat(
    const std::string& name, const std::vector<int64_t>& expected_shape) {
  absl::StatusOr<const TensorInfo*> info = Find(name);
  if (!info.ok()) return info.status();
  if ((*info)->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        shards_.at(ShardOf(name))->path(), ": tensor '", name, "' has shape ",
        ShapeToString((*info)->shape), " but config.json implies ", ShapeToString(expected_shape)));
  }
  absl::StatusOr<const uint8_t*> data = ReadRaw(**info, name);
  if (!data.ok()) return data.status();
  std::vector<float> values(static_cast<size_t>((*info)->NumElements()));
  ConvertToFloat((*info)->dtype, *data, (*info)->NumElements(), values.data());
  return values;
}

absl::StatusOr<WeightMatrix> Checkpoint::ReadWeight(const std::string& prefix, int64_t rows,
                                                    int64_t cols, bool dequantize,
                                                    bool keep_bf16) {
  const std::string weight_name = prefix + ".weight";
  absl::StatusOr<const TensorInfo*> info = Find(weight_name);
  if (!info.ok()) return info.status();
  const std::vector<int64_t> expected_shape = {rows, cols};
  if ((*info)->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        shards_.at(ShardOf(weight_name))->path(), ": tensor '", weight_name, "' has shape ",
        ShapeToString((*info)->shape), " but config.json implies ", ShapeToString(expected_shape)));
  }
  WeightMatrix matrix;
  matrix.rows = rows;
  matrix.cols = cols;
  if ((*info)->dtype == DType::kBF16 && keep_bf16 && !dequantize) {
    absl::StatusOr<const uint8_t*> data = ReadRaw(**info, weight_name);
    if (!data.ok()) return data.status();
    matrix.format = WeightMatrix::Format::kBFloat16;
    matrix.bf16.resize(static_cast<size_t>(rows * cols));
    std::memcpy(matrix.bf16.data(), *data, sizeof(uint16_t) * matrix.bf16.size());
    return matrix;
  }
  if ((*info)->dtype != DType::kF8E4M3) {
    absl::StatusOr<std::vector<float>> values = ReadFloat(weight_name, expected_shape);
    if (!values.ok()) return values.status();
    matrix.format = WeightMatrix::Format::kFloat32;
    matrix.values = *std::move(values);
    return matrix;
  }
  if (config_.quantization.has_value()) {
    matrix.block_rows = config_.quantization->block_rows;
    matrix.block_cols = config_.quantization->block_cols;
  }
  const std::string scale_name = prefix + ".weight_scale_inv";
  absl::StatusOr<std::vector<float>> scales =
      ReadFloat(scale_name, {matrix.scale_rows(), matrix.scale_cols()});
  if (!scales.ok()) {
    return absl::Status(scales.status().code(),
                        absl::StrCat("FP8 weight '", weight_name, "' needs its block scales: ",
                                     scales.status().message()));
  }
  absl::StatusOr<const uint8_t*> data = ReadRaw(**info, weight_name);
  if (!data.ok()) return data.status();
  matrix.format = WeightMatrix::Format::kFp8Block;
  matrix.fp8.assign(*data, *data + rows * cols);
  matrix.block_scales = *std::move(scales);
  if (dequantize) {
    matrix.values = matrix.Dequantize();
    matrix.fp8.clear();
    matrix.fp8.shrink_to_fit();
    matrix.block_scales.clear();
    matrix.format = WeightMatrix::Format::kFloat32;
  }
  return matrix;
}

std::vector<ByteRange> Checkpoint::ReadRanges() const {
  absl::MutexLock lock(&mutex_);
  return read_ranges_;
}

uint64_t Checkpoint::BytesRead() const {
  absl::MutexLock lock(&mutex_);
  uint64_t total = 0;
  for (const ByteRange& range : read_ranges_) total += range.end - range.begin;
  return total;
}

}  // namespace moemesh::checkpoint
