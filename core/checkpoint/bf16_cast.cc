#include "core/checkpoint/bf16_cast.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/checkpoint_writer.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {
namespace fs = std::filesystem;

namespace {

constexpr absl::string_view kScaleSuffix = "_scale_inv";  // "<prefix>.weight_scale_inv"

absl::Status WriteConfigWithoutQuantization(const std::string& input, const std::string& output) {
  std::ifstream stream(input, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat("cannot open ", input));
  std::stringstream buffer;
  buffer << stream.rdbuf();
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(buffer.str(), nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(input, ": not a JSON object"));
  }
  config.erase("quantization_config");
  return WriteJsonFile(output, config);
}

}  // namespace

absl::Status ConvertCheckpointToBf16(const std::string& input_directory,
                                     const std::string& output_directory) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(input_directory);
  if (!checkpoint.ok()) return checkpoint.status();
  if (!(*checkpoint)->is_fp8()) {
    return absl::FailedPreconditionError(absl::StrCat(
        input_directory, ": config.json has no quantization_config; not an FP8 checkpoint"));
  }
  std::error_code error;
  if (fs::exists(output_directory, error)) {
    if (!fs::is_directory(output_directory, error) || !fs::is_empty(output_directory, error)) {
      return absl::FailedPreconditionError(
          absl::StrCat(output_directory, ": exists and is not an empty directory"));
    }
  } else if (!fs::create_directories(output_directory, error) && error) {
    return absl::InternalError(
        absl::StrCat(output_directory, ": cannot create: ", error.message()));
  }

  // Tensor names per shard, in the shard's data order.
  std::map<std::string, std::vector<const TensorInfo*>> by_shard;
  for (const std::string& name : (*checkpoint)->TensorNames()) {
    absl::StatusOr<const TensorInfo*> info = (*checkpoint)->Find(name);
    if (!info.ok()) return info.status();
    by_shard[(*checkpoint)->ShardOf(name)].push_back(*info);
  }
  auto is_fp8 = [&](const std::string& name) {
    absl::StatusOr<const TensorInfo*> info = (*checkpoint)->Find(name);
    return info.ok() && (*info)->dtype == DType::kF8E4M3;
  };

  std::map<std::string, std::string> weight_map;
  uint64_t total_size = 0;
  for (auto& [shard_name, infos] : by_shard) {
    std::sort(infos.begin(), infos.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->data_begin < b->data_begin;
    });
    const std::string shard_path = (fs::path(input_directory) / shard_name).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> raw = SafetensorsFile::Open(shard_path);
    if (!raw.ok()) return raw.status();
    std::vector<TensorBytes> tensors;
    for (const TensorInfo* info : infos) {
      const std::string& name = info->name;
      if (absl::EndsWith(name, kScaleSuffix) &&
          is_fp8(name.substr(0, name.size() - kScaleSuffix.size()))) {
        continue;  // folded into its weight
      }
      TensorBytes tensor;
      tensor.name = name;
      tensor.shape = info->shape;
      if (info->dtype == DType::kF8E4M3) {
        if (info->shape.size() != 2 || !absl::EndsWith(name, ".weight")) {
          return absl::InvalidArgumentError(absl::StrCat(
              shard_path, ": tensor '", name, "' is F8_E4M3 but not a 2-D linear '.weight'"));
        }
        const std::string prefix = name.substr(0, name.size() - 7);
        absl::StatusOr<WeightMatrix> weight =
            (*checkpoint)->ReadWeight(prefix, info->shape[0], info->shape[1], /*dequantize=*/true);
        if (!weight.ok()) return weight.status();
        tensor.dtype = DType::kBF16;
        tensor.data = ToBF16Bytes(weight->values.data(), info->NumElements());
      } else {
        const SafetensorsFile& file = **raw;
        const TensorInfo* local = file.Find(name);
        if (local == nullptr) {
          return absl::NotFoundError(absl::StrCat(shard_path, ": tensor '", name, "' missing"));
        }
        tensor.dtype = local->dtype;
        tensor.data.assign(file.Data(*local),
                           file.Data(*local) + (local->data_end - local->data_begin));
      }
      total_size += tensor.data.size();
      weight_map[name] = shard_name;
      tensors.push_back(std::move(tensor));
    }
    if (absl::Status status =
            WriteSafetensorsFile((fs::path(output_directory) / shard_name).string(), tensors);
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = WriteIndexFile(output_directory, total_size, weight_map);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          WriteConfigWithoutQuantization((fs::path(input_directory) / "config.json").string(),
                                         (fs::path(output_directory) / "config.json").string());
      !status.ok()) {
    return status;
  }
  // Everything else (tokenizer.json, tokenizer_config.json, generation_config.json, code).
  for (const fs::directory_entry& entry : fs::directory_iterator(input_directory, error)) {
    const std::string file_name = entry.path().filename().string();
    if (!entry.is_regular_file() || absl::EndsWith(file_name, ".safetensors") ||
        file_name == "model.safetensors.index.json" || file_name == "config.json") {
      continue;
    }
    fs::copy_file(entry.path(), fs::path(output_directory) / file_name,
                  fs::copy_options::overwrite_existing, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot copy ", entry.path().string(), ": ", error.message()));
    }
  }
  if (error) {
    return absl::InternalError(absl::StrCat(input_directory, ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace moemesh::checkpoint
