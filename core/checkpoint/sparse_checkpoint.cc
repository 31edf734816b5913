#include "core/checkpoint/sparse_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/checkpoint_writer.h"
#include "core/checkpoint/dtype.h"
#include "core/checkpoint/synthetic_checkpoint.h"
#include "nlohmann/json.hpp"

namespace moemesh::checkpoint {
namespace fs = std::filesystem;

namespace {

// One tensor of the file: name, dtype, shape, data bytes.
struct SparseTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes;
};

uint64_t Bytes(DType dtype, const std::vector<int64_t>& shape) {
  uint64_t elements = 1;
  for (int64_t dim : shape) elements *= static_cast<uint64_t>(dim);
  return elements * static_cast<uint64_t>(DTypeSize(dtype));
}

// The tensors of the layout in file order, each FP8 weight followed by its scales.
std::vector<SparseTensor> Tensors(const ModelConfig& config) {
  const int block_rows = config.quantization->block_rows;
  const int block_cols = config.quantization->block_cols;
  std::vector<SparseTensor> tensors;
  for (const TensorSpec& spec : CheckpointLayout(config)) {
    switch (spec.kind) {
      case TensorSpec::Kind::kLinear: {
        tensors.push_back({spec.name, DType::kF8E4M3, spec.shape, Bytes(DType::kF8E4M3, spec.shape)});
        const std::vector<int64_t> scales = {(spec.shape[0] + block_rows - 1) / block_rows,
                                             (spec.shape[1] + block_cols - 1) / block_cols};
        tensors.push_back({spec.name + "_scale_inv", DType::kF32, scales, Bytes(DType::kF32, scales)});
        break;
      }
      case TensorSpec::Kind::kGateBias:
        tensors.push_back({spec.name, DType::kF32, spec.shape, Bytes(DType::kF32, spec.shape)});
        break;
      default:
        tensors.push_back({spec.name, DType::kBF16, spec.shape, Bytes(DType::kBF16, spec.shape)});
    }
  }
  return tensors;
}

// Writes the safetensors header of `tensors` (the layout WriteSafetensorsFile writes) and
// extends the file to its full size without writing the data.
absl::Status WriteSparseShard(const std::string& path, const std::vector<const SparseTensor*>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const SparseTensor* tensor : tensors) {
    nlohmann::ordered_json entry;
    entry["dtype"] = std::string(DTypeName(tensor->dtype));
    entry["shape"] = tensor->shape;
    entry["data_offsets"] = {offset, offset + tensor->bytes};
    header[tensor->name] = std::move(entry);
    offset += tensor->bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
  prefix += text;

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  bool ok = ::write(fd, prefix.data(), prefix.size()) == static_cast<ssize_t>(prefix.size());
  ok = ok && ::ftruncate(fd, static_cast<off_t>(prefix.size() + offset)) == 0;
  const int error = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok) return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(error)));
  return absl::OkStatus();
}

}  // namespace

std::vector<int> BalancedShardAssignment(const std::vector<uint64_t>& sizes, int shard_count) {
  uint64_t total = 0;
  for (uint64_t size : sizes) total += size;
  std::vector<int> shards;
  shards.reserve(sizes.size());
  uint64_t start = 0;
  for (uint64_t size : sizes) {
    // floor(start * shard_count / total) without overflow (start < total < 2^50 here, but keep
    // it exact for any size: 128-bit product).
    const unsigned __int128 scaled = static_cast<unsigned __int128>(start) * shard_count;
    shards.push_back(total == 0 ? 0 : static_cast<int>(scaled / total));
    start += size;
  }
  return shards;
}

absl::Status WriteSparseCheckpoint(const ModelConfig& config, int shard_count,
                                   const std::string& directory) {
  if (!config.quantization.has_value()) {
    return absl::InvalidArgumentError("a sparse checkpoint needs an FP8 (quantized) config");
  }
  if (shard_count <= 0) return absl::InvalidArgumentError("the shard count must be positive");
  std::error_code error;
  if (fs::exists(directory, error) && !fs::is_empty(directory, error)) {
    return absl::FailedPreconditionError(
        absl::StrCat(directory, " exists and is not empty"));
  }
  fs::create_directories(directory, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", directory, ": ", error.message()));
  }

  const std::vector<SparseTensor> tensors = Tensors(config);
  // A weight and its scales share a shard (DeepSeek's shards keep them together): assign by
  // the weight, the scales follow.
  std::vector<uint64_t> sizes;
  std::vector<size_t> first_of_unit;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const bool scales = tensors[i].name.size() > 10 &&
                        tensors[i].name.compare(tensors[i].name.size() - 10, 10, "_scale_inv") == 0;
    if (scales) {
      sizes.back() += tensors[i].bytes;
    } else {
      sizes.push_back(tensors[i].bytes);
      first_of_unit.push_back(i);
    }
  }
  const std::vector<int> unit_shard = BalancedShardAssignment(sizes, shard_count);
  std::vector<std::vector<const SparseTensor*>> shards(shard_count);
  for (size_t unit = 0; unit < unit_shard.size(); ++unit) {
    const size_t end = unit + 1 < first_of_unit.size() ? first_of_unit[unit + 1] : tensors.size();
    for (size_t i = first_of_unit[unit]; i < end; ++i) shards[unit_shard[unit]].push_back(&tensors[i]);
  }
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  for (int shard = 0; shard < shard_count; ++shard) {
    if (shards[shard].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          shard_count, " shards leave shard ", shard + 1, " empty: a tensor is larger than "
          "total / shard count"));
    }
    const std::string name = ShardFileName(shard + 1, shard_count);
    if (absl::Status status = WriteSparseShard((fs::path(directory) / name).string(), shards[shard]);
        !status.ok()) {
      return status;
    }
    for (const SparseTensor* tensor : shards[shard]) {
      weight_map[tensor->name] = name;
      total += tensor->bytes;
    }
  }
  if (absl::Status status = WriteIndexFile(directory, total, weight_map); !status.ok()) return status;
  return WriteConfigFiles(directory, config);
}

}  // namespace moemesh::checkpoint
