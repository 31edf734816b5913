#include "core/checkpoint/checkpoint_writer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checkpoint/checkpoint.h"

namespace moemesh::checkpoint {
namespace fs = std::filesystem;

namespace {

absl::Status CheckTensor(const TensorBytes& tensor) {
  uint64_t elements = 1;
  for (int64_t dim : tensor.shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", tensor.name, "': negative dimension in ", ShapeToString(tensor.shape)));
    }
    elements *= static_cast<uint64_t>(dim);
  }
  const uint64_t expected = elements * static_cast<uint64_t>(DTypeSize(tensor.dtype));
  if (tensor.data.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor.name, "': shape ", ShapeToString(tensor.shape), " of ",
        DTypeName(tensor.dtype), " needs ", expected, " bytes, got ", tensor.data.size()));
  }
  if (tensor.name.empty() || tensor.name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", tensor.name, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<TensorBytes>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const TensorBytes& tensor : tensors) {
    if (absl::Status status = CheckTensor(tensor); !status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", status.message()));
    }
    if (header.contains(tensor.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", tensor.name, "' written twice"));
    }
    nlohmann::ordered_json entry;
    entry["dtype"] = std::string(DTypeName(tensor.dtype));
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = {offset, offset + tensor.data.size()};
    header[tensor.name] = std::move(entry);
    offset += tensor.data.size();
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot create"));
  unsigned char length[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xFF);
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const TensorBytes& tensor : tensors) {
    out.write(reinterpret_cast<const char*>(tensor.data.data()),
              static_cast<std::streamsize>(tensor.data.size()));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

Fp8BlockQuantized QuantizeFp8Block(const float* values, int64_t rows, int64_t cols, int block_rows,
                                   int block_cols) {
  const int64_t scale_rows = (rows + block_rows - 1) / block_rows;
  const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
  Fp8BlockQuantized result;
  result.codes.resize(static_cast<size_t>(rows * cols));
  result.scales.resize(static_cast<size_t>(scale_rows * scale_cols));
  for (int64_t block_row = 0; block_row < scale_rows; ++block_row) {
    const int64_t row_begin = block_row * block_rows;
    const int64_t row_end = std::min(rows, row_begin + block_rows);
    for (int64_t block_col = 0; block_col < scale_cols; ++block_col) {
      const int64_t col_begin = block_col * block_cols;
      const int64_t col_end = std::min(cols, col_begin + block_cols);
      float amax = 0.0f;
      for (int64_t row = row_begin; row < row_end; ++row) {
        for (int64_t col = col_begin; col < col_end; ++col) {
          amax = std::max(amax, std::fabs(values[row * cols + col]));
        }
      }
      const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      result.scales[block_row * scale_cols + block_col] = scale;
      for (int64_t row = row_begin; row < row_end; ++row) {
        for (int64_t col = col_begin; col < col_end; ++col) {
          result.codes[row * cols + col] = FloatToFp8E4M3(values[row * cols + col] / scale);
        }
      }
    }
  }
  return result;
}

std::vector<uint8_t> ToBF16Bytes(const float* values, int64_t count) {
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * 2);
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t bits = FloatToBFloat16(values[i]);
    bytes[2 * i] = static_cast<uint8_t>(bits & 0xFF);
    bytes[2 * i + 1] = static_cast<uint8_t>(bits >> 8);
  }
  return bytes;
}

std::vector<uint8_t> ToF32Bytes(const float* values, int64_t count) {
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * 4);
  std::memcpy(bytes.data(), values, bytes.size());  // x86-64 and aarch64 are little-endian
  return bytes;
}

std::string ShardFileName(int index, int count) {
  return absl::StrFormat("model-%05d-of-%06d.safetensors", index, count);
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Create(
    const std::string& directory, uint64_t shard_bytes) {
  if (shard_bytes == 0) return absl::InvalidArgumentError("shard byte budget must be positive");
  std::error_code error;
  if (fs::exists(directory, error)) {
    if (!fs::is_directory(directory, error) || !fs::is_empty(directory, error)) {
      return absl::FailedPreconditionError(
          absl::StrCat(directory, ": exists and is not an empty directory"));
    }
  } else if (!fs::create_directories(directory, error) && error) {
    return absl::InternalError(absl::StrCat(directory, ": cannot create: ", error.message()));
  }
  std::unique_ptr<CheckpointWriter> writer(new CheckpointWriter());
  writer->directory_ = directory;
  writer->shard_bytes_ = shard_bytes;
  return writer;
}

CheckpointWriter::~CheckpointWriter() {
  if (finished_) return;
  std::error_code ignored;
  for (const std::string& name : temp_names_) fs::remove(fs::path(directory_) / name, ignored);
}

absl::Status CheckpointWriter::Add(TensorBytes tensor) {
  if (finished_) return absl::FailedPreconditionError("CheckpointWriter: Add after Finish");
  if (absl::Status status = CheckTensor(tensor); !status.ok()) return status;
  if (tensor_shard_.count(tensor.name) > 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' added twice"));
  }
  const uint64_t size = tensor.data.size();
  if (!pending_.empty() && pending_bytes_ + size > shard_bytes_) {
    if (absl::Status status = FlushShard(); !status.ok()) return status;
  }
  tensor_shard_[tensor.name] = static_cast<int>(temp_names_.size());
  pending_bytes_ += size;
  total_bytes_ += size;
  pending_.push_back(std::move(tensor));
  return absl::OkStatus();
}

absl::Status CheckpointWriter::AddBF16(const std::string& name, std::vector<int64_t> shape,
                                       const float* values) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return Add(TensorBytes{name, DType::kBF16, std::move(shape), ToBF16Bytes(values, count)});
}

absl::Status CheckpointWriter::AddF32(const std::string& name, std::vector<int64_t> shape,
                                      const float* values) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return Add(TensorBytes{name, DType::kF32, std::move(shape), ToF32Bytes(values, count)});
}

absl::Status CheckpointWriter::AddFp8Linear(const std::string& prefix, int64_t rows, int64_t cols,
                                            const float* values, int block_rows, int block_cols) {
  Fp8BlockQuantized quantized = QuantizeFp8Block(values, rows, cols, block_rows, block_cols);
  const int64_t scale_rows = (rows + block_rows - 1) / block_rows;
  const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
  if (absl::Status status = Add(TensorBytes{
          prefix + ".weight", DType::kF8E4M3, {rows, cols}, std::move(quantized.codes)});
      !status.ok()) {
    return status;
  }
  return Add(TensorBytes{prefix + ".weight_scale_inv",
                         DType::kF32,
                         {scale_rows, scale_cols},
                         ToF32Bytes(quantized.scales.data(), scale_rows * scale_cols)});
}

absl::Status CheckpointWriter::FlushShard() {
  const std::string temp_name = absl::StrFormat(".shard-%05d.tmp", temp_names_.size() + 1);
  absl::Status status = WriteSafetensorsFile((fs::path(directory_) / temp_name).string(), pending_);
  temp_names_.push_back(temp_name);
  pending_.clear();
  pending_bytes_ = 0;
  return status;
}

absl::Status CheckpointWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("CheckpointWriter: Finish called twice");
  if (!pending_.empty() || temp_names_.empty()) {
    if (absl::Status status = FlushShard(); !status.ok()) return status;
  }
  const int count = static_cast<int>(temp_names_.size());
  shard_names_.clear();
  for (int i = 0; i < count; ++i) {
    shard_names_.push_back(ShardFileName(i + 1, count));
    std::error_code error;
    fs::rename(fs::path(directory_) / temp_names_[i], fs::path(directory_) / shard_names_[i],
               error);
    if (error) {
      return absl::InternalError(absl::StrCat(directory_, ": cannot rename ", temp_names_[i],
                                              " to ", shard_names_[i], ": ", error.message()));
    }
  }
  finished_ = true;
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : tensor_shard_) weight_map[name] = shard_names_[shard];
  return WriteIndexFile(directory_, total_bytes_, weight_map);
}

absl::Status WriteIndexFile(const std::string& directory, uint64_t total_size,
                            const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_size}};
  // Built in one go: inserting key by key into ordered_json searches the keys every time
  // (quadratic, seconds for the 91,000 tensors of a 671B index). weight_map's keys are unique.
  std::vector<std::pair<const std::string, nlohmann::ordered_json>> entries;
  entries.reserve(weight_map.size());
  for (const auto& [name, shard] : weight_map) entries.emplace_back(name, shard);
  index["weight_map"] = nlohmann::ordered_json::object_t(entries.begin(), entries.end());
  return WriteJsonFile((fs::path(directory) / "model.safetensors.index.json").string(), index);
}

nlohmann::ordered_json ModelConfigToJson(const ModelConfig& config) {
  nlohmann::ordered_json json;
  json["architectures"] = {"DeepseekV3ForCausalLM"};
  json["attention_bias"] = false;
  json["attention_dropout"] = 0.0;
  json["auto_map"] = {{"AutoConfig", "configuration_deepseek.DeepseekV3Config"},
                      {"AutoModel", "modeling_deepseek.DeepseekV3Model"},
                      {"AutoModelForCausalLM", "modeling_deepseek.DeepseekV3ForCausalLM"}};
  json["aux_loss_alpha"] = 0.001;
  json["bos_token_id"] = config.bos_token_id;
  json["eos_token_id"] = config.eos_token_id;
  json["ep_size"] = 1;
  json["first_k_dense_replace"] = config.first_k_dense_replace;
  json["hidden_act"] = "silu";
  json["hidden_size"] = config.hidden_size;
  json["initializer_range"] = 0.02;
  json["intermediate_size"] = config.intermediate_size;
  json["kv_lora_rank"] = config.kv_lora_rank;
  json["max_position_embeddings"] = config.max_position_embeddings;
  json["model_type"] = "deepseek_v3";
  json["moe_intermediate_size"] = config.moe_intermediate_size;
  json["moe_layer_freq"] = config.moe_layer_freq;
  json["n_group"] = config.n_group;
  json["n_routed_experts"] = config.n_routed_experts;
  json["n_shared_experts"] = config.n_shared_experts;
  json["norm_topk_prob"] = config.norm_topk_prob;
  json["num_attention_heads"] = config.num_attention_heads;
  json["num_experts_per_tok"] = config.num_experts_per_tok;
  json["num_hidden_layers"] = config.num_hidden_layers;
  json["num_key_value_heads"] = config.num_attention_heads;
  json["num_nextn_predict_layers"] = config.num_nextn_predict_layers;
  if (config.q_lora_rank > 0) {
    json["q_lora_rank"] = config.q_lora_rank;
  } else {
    json["q_lora_rank"] = nullptr;
  }
  json["qk_nope_head_dim"] = config.qk_nope_head_dim;
  json["qk_rope_head_dim"] = config.qk_rope_head_dim;
  json["rms_norm_eps"] = config.rms_norm_eps;
  if (config.rope_scaling.has_value()) {
    const YarnRopeScaling& yarn = *config.rope_scaling;
    json["rope_scaling"] = {
        {"beta_fast", yarn.beta_fast},
        {"beta_slow", yarn.beta_slow},
        {"factor", yarn.factor},
        {"mscale", yarn.mscale},
        {"mscale_all_dim", yarn.mscale_all_dim},
        {"original_max_position_embeddings", yarn.original_max_position_embeddings},
        {"type", "yarn"}};
  } else {
    json["rope_scaling"] = nullptr;
  }
  json["rope_theta"] = config.rope_theta;
  json["routed_scaling_factor"] = config.routed_scaling_factor;
  json["scoring_func"] = config.scoring_func;
  json["seq_aux"] = true;
  json["tie_word_embeddings"] = config.tie_word_embeddings;
  json["topk_group"] = config.topk_group;
  json["topk_method"] = config.topk_method;
  json["torch_dtype"] = "bfloat16";
  json["transformers_version"] = "4.46.3";
  json["use_cache"] = true;
  json["v_head_dim"] = config.v_head_dim;
  json["vocab_size"] = config.vocab_size;
  if (config.quantization.has_value()) {
    json["quantization_config"] = {
        {"activation_scheme", "dynamic"},
        {"fmt", "e4m3"},
        {"quant_method", "fp8"},
        {"weight_block_size", {config.quantization->block_rows, config.quantization->block_cols}}};
  }
  return json;
}

absl::Status WriteJsonFile(const std::string& path, const nlohmann::ordered_json& json) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot create"));
  out << json.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::Status WriteConfigFiles(const std::string& directory, const ModelConfig& config) {
  const std::filesystem::path root(directory);
  if (absl::Status status = WriteJsonFile((root / "config.json").string(), ModelConfigToJson(config));
      !status.ok()) {
    return status;
  }
  nlohmann::ordered_json generation;
  generation["_from_model_config"] = true;
  generation["bos_token_id"] = config.bos_token_id;
  generation["eos_token_id"] = config.eos_token_id;
  generation["do_sample"] = true;
  generation["temperature"] = 0.6;
  generation["top_p"] = 0.95;
  generation["transformers_version"] = "4.46.3";
  return WriteJsonFile((root / "generation_config.json").string(), generation);
}

}  // namespace moemesh::checkpoint
