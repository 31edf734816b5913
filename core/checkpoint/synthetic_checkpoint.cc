#include "core/checkpoint/synthetic_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checkpoint/checkpoint_writer.h"

namespace moemesh::checkpoint {
namespace fs = std::filesystem;

namespace {

// The shape of ../shared/fixtures/tiny-r1/config.json.
ModelConfig TinyConfig() {
  ModelConfig config;
  config.vocab_size = 129280;
  config.hidden_size = 64;
  config.intermediate_size = 288;
  config.moe_intermediate_size = 160;
  config.num_hidden_layers = 4;
  config.num_nextn_predict_layers = 1;
  config.num_attention_heads = 4;
  config.q_lora_rank = 96;
  config.kv_lora_rank = 64;
  config.qk_nope_head_dim = 32;
  config.qk_rope_head_dim = 16;
  config.v_head_dim = 32;
  config.n_routed_experts = 16;
  config.n_shared_experts = 1;
  config.num_experts_per_tok = 4;
  config.n_group = 4;
  config.topk_group = 2;
  config.first_k_dense_replace = 1;
  config.moe_layer_freq = 1;
  config.routed_scaling_factor = 2.5;
  config.norm_topk_prob = true;
  config.scoring_func = "sigmoid";
  config.topk_method = "noaux_tc";
  config.rms_norm_eps = 1e-6;
  config.rope_theta = 10000.0;
  config.max_position_embeddings = 163840;
  config.rope_scaling = YarnRopeScaling{.factor = 40.0,
                                        .original_max_position_embeddings = 4096,
                                        .beta_fast = 32.0,
                                        .beta_slow = 1.0,
                                        .mscale = 1.0,
                                        .mscale_all_dim = 1.0};
  config.quantization = Fp8Quantization{128, 128};
  config.bos_token_id = 0;
  config.eos_token_id = 1;
  return config;
}

// "bench": a model big enough that weight traffic, expert placement and dispatch costs are
// measurable (~1.9 GB in FP8), small enough to generate in about a minute.
//   hidden 1024, 8 layers (layer 0 dense, 1..7 MoE) + 1 MTP layer, 16 heads,
//   q_lora_rank 384, kv_lora_rank 256, qk_nope 64, qk_rope 32, v_head 64,
//   dense intermediate 2816 (2.75x hidden, 22 full blocks),
//   64 routed experts of intermediate 512 in 8 groups, top-4 groups, top-6 experts,
//   1 shared expert, routed_scaling_factor 2.5, vocab 129280 (the real tokenizer's).
// Bytes: 4 vocab x hidden BF16 matrices (embed, lm_head, MTP embed and head) 1.06 GB; 8 MoE
// layers (7 + MTP) x 65 experts x 1.5 MiB = 0.82 GB; attention and dense MLP ~35 MB.
ModelConfig BenchConfig() {
  ModelConfig config = TinyConfig();
  config.hidden_size = 1024;
  config.intermediate_size = 2816;
  config.moe_intermediate_size = 512;
  config.num_hidden_layers = 8;
  config.num_attention_heads = 16;
  config.q_lora_rank = 384;
  config.kv_lora_rank = 256;
  config.qk_nope_head_dim = 64;
  config.qk_rope_head_dim = 32;
  config.v_head_dim = 64;
  config.n_routed_experts = 64;
  config.n_shared_experts = 1;
  config.num_experts_per_tok = 6;
  config.n_group = 8;
  config.topk_group = 4;
  config.first_k_dense_replace = 1;
  return config;
}

// "deepseek-v3-671b": the released DeepSeek-V3 / R1 shape (../shared/fixtures/deepseek-v3-671b/
// config.json): 61 layers (3 dense, 58 MoE) + 1 MTP layer, hidden 7168, 128 heads, 256 routed
// experts of intermediate 2048 in 8 groups (top-4 groups, top-8 experts), 1 shared expert.
// About 688 GB in FP8: only sparse checkpoints of it are written (see sparse_checkpoint.h).
ModelConfig DeepSeekV3Config() {
  ModelConfig config = TinyConfig();
  config.hidden_size = 7168;
  config.intermediate_size = 18432;
  config.moe_intermediate_size = 2048;
  config.num_hidden_layers = 61;
  config.num_nextn_predict_layers = 1;
  config.num_attention_heads = 128;
  config.q_lora_rank = 1536;
  config.kv_lora_rank = 512;
  config.qk_nope_head_dim = 128;
  config.qk_rope_head_dim = 64;
  config.v_head_dim = 128;
  config.n_routed_experts = 256;
  config.n_shared_experts = 1;
  config.num_experts_per_tok = 8;
  config.n_group = 8;
  config.topk_group = 4;
  config.first_k_dense_replace = 3;
  return config;
}

// DeepSeek's release has 163 shards.
constexpr uint64_t kDeepSeekV3Shards = 163;

// "heads128": DeepSeek-V3's 128 attention heads on the tiny shape, for long-context tests: the
// attention core's work and scratch grow with heads x positions while everything else stays
// small. 2 layers (0 dense, 1 MoE) + 1 MTP layer, kv_lora_rank 32; otherwise as "tiny"
// (hidden 64, 16 routed experts, vocab 129280). ~135 MB of float32 weights once loaded.
ModelConfig Heads128Config() {
  ModelConfig config = TinyConfig();
  config.num_attention_heads = 128;
  config.num_hidden_layers = 2;
  config.kv_lora_rank = 32;
  return config;
}

// FNV-1a of the tensor name, mixed with the seed by splitmix64: each tensor gets its own
// stream, so its values do not depend on which other tensors exist or their order.
uint64_t TensorSeed(uint64_t seed, const std::string& name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (hash | 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Standard normal samples by Box-Muller from one 64-bit draw per pair (explicit, so the bytes
// do not depend on the standard library's normal_distribution).
void FillNormal(std::mt19937_64& engine, float mean, float stddev, float* out, int64_t count) {
  constexpr double kTwoPi = 6.283185307179586;
  constexpr double kInv2To32 = 1.0 / 4294967296.0;
  for (int64_t i = 0; i < count; i += 2) {
    const uint64_t bits = engine();
    const double u1 = (static_cast<double>(bits >> 32) + 0.5) * kInv2To32;  // (0, 1)
    const double u2 = static_cast<double>(bits & 0xFFFFFFFFu) * kInv2To32;  // [0, 1)
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = kTwoPi * u2;
    out[i] = static_cast<float>(mean + stddev * radius * std::cos(angle));
    if (i + 1 < count) out[i + 1] = static_cast<float>(mean + stddev * radius * std::sin(angle));
  }
}

void AddLinear(std::vector<TensorSpec>& specs, const std::string& prefix, int64_t rows,
               int64_t cols, bool output_projection) {
  // N(0, 1/sqrt(in)); projections back into the residual stream (o_proj, down_proj) at half
  // that, as in the fixture, so that the residual stream grows slowly with depth.
  const float stddev = (output_projection ? 0.5f : 1.0f) / std::sqrt(static_cast<float>(cols));
  specs.push_back({prefix + ".weight", TensorSpec::Kind::kLinear, {rows, cols}, stddev});
}

void AddNorm(std::vector<TensorSpec>& specs, const std::string& name, int64_t size) {
  specs.push_back({name, TensorSpec::Kind::kNorm, {size}, 0.1f});
}

void AddMlp(std::vector<TensorSpec>& specs, const std::string& prefix, int64_t hidden,
            int64_t intermediate) {
  AddLinear(specs, prefix + ".gate_proj", intermediate, hidden, false);
  AddLinear(specs, prefix + ".up_proj", intermediate, hidden, false);
  AddLinear(specs, prefix + ".down_proj", hidden, intermediate, true);
}

void AddBlock(std::vector<TensorSpec>& specs, const ModelConfig& config, int layer) {
  const std::string prefix = absl::StrCat("model.layers.", layer);
  const int64_t hidden = config.hidden_size;
  const int64_t heads = config.num_attention_heads;
  AddNorm(specs, prefix + ".input_layernorm.weight", hidden);
  AddNorm(specs, prefix + ".post_attention_layernorm.weight", hidden);
  const std::string attn = prefix + ".self_attn";
  if (config.q_lora_rank > 0) {
    AddLinear(specs, attn + ".q_a_proj", config.q_lora_rank, hidden, false);
    AddNorm(specs, attn + ".q_a_layernorm.weight", config.q_lora_rank);
    AddLinear(specs, attn + ".q_b_proj", heads * config.qk_head_dim(), config.q_lora_rank, false);
  } else {
    AddLinear(specs, attn + ".q_proj", heads * config.qk_head_dim(), hidden, false);
  }
  AddLinear(specs, attn + ".kv_a_proj_with_mqa", config.kv_lora_rank + config.qk_rope_head_dim,
            hidden, false);
  AddNorm(specs, attn + ".kv_a_layernorm.weight", config.kv_lora_rank);
  AddLinear(specs, attn + ".kv_b_proj", heads * (config.qk_nope_head_dim + config.v_head_dim),
            config.kv_lora_rank, false);
  AddLinear(specs, attn + ".o_proj", hidden, heads * config.v_head_dim, true);
  if (!config.IsMoeLayer(layer)) {
    AddMlp(specs, prefix + ".mlp", hidden, config.intermediate_size);
    return;
  }
  // Gate logits N(0, 2) for a unit-RMS input, as in the fixture: the sigmoid scores spread.
  specs.push_back({prefix + ".mlp.gate.weight",
                   TensorSpec::Kind::kGateWeight,
                   {config.n_routed_experts, hidden},
                   2.0f / std::sqrt(static_cast<float>(hidden))});
  specs.push_back({prefix + ".mlp.gate.e_score_correction_bias",
                   TensorSpec::Kind::kGateBias,
                   {config.n_routed_experts},
                   0.1f});
  for (int expert = 0; expert < config.n_routed_experts; ++expert) {
    AddMlp(specs, absl::StrCat(prefix, ".mlp.experts.", expert), hidden,
           config.moe_intermediate_size);
  }
  if (config.n_shared_experts > 0) {
    AddMlp(specs, prefix + ".mlp.shared_experts", hidden,
           static_cast<int64_t>(config.moe_intermediate_size) * config.n_shared_experts);
  }
}

}  // namespace

absl::StatusOr<CheckpointPreset> FindCheckpointPreset(absl::string_view name) {
  if (name == "tiny") return CheckpointPreset{"tiny", TinyConfig(), 32ull << 20};
  if (name == "bench") return CheckpointPreset{"bench", BenchConfig(), 256ull << 20};
  if (name == "deepseek-v3-671b") {
    const ModelConfig config = DeepSeekV3Config();
    const uint64_t total = CheckpointDataBytes(config);
    return CheckpointPreset{"deepseek-v3-671b", config,
                            (total + kDeepSeekV3Shards - 1) / kDeepSeekV3Shards,
                            /*sparse_only=*/true};
  }
  if (name == "heads128") return CheckpointPreset{"heads128", Heads128Config(), 64ull << 20};
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown preset '", name, "' (known: ", absl::StrJoin(CheckpointPresetNames(), ", "), ")"));
}

std::vector<std::string> CheckpointPresetNames() {
  return {"tiny", "bench", "heads128", "deepseek-v3-671b"};
}

std::vector<TensorSpec> CheckpointLayout(const ModelConfig& config) {
  std::vector<TensorSpec> specs;
  const int64_t hidden = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  const float head_std = 1.0f / std::sqrt(static_cast<float>(hidden));
  specs.push_back(
      {"model.embed_tokens.weight", TensorSpec::Kind::kEmbedding, {vocab, hidden}, 1.0f});
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) AddBlock(specs, config, layer);
  for (int mtp = 0; mtp < config.num_nextn_predict_layers; ++mtp) {
    const int layer = config.num_hidden_layers + mtp;
    const std::string prefix = absl::StrCat("model.layers.", layer);
    AddNorm(specs, prefix + ".enorm.weight", hidden);
    AddNorm(specs, prefix + ".hnorm.weight", hidden);
    AddLinear(specs, prefix + ".eh_proj", hidden, 2 * hidden, false);
    AddNorm(specs, prefix + ".shared_head.norm.weight", hidden);
    specs.push_back({prefix + ".shared_head.head.weight",
                     TensorSpec::Kind::kEmbedding,
                     {vocab, hidden},
                     head_std});
    specs.push_back(
        {prefix + ".embed_tokens.weight", TensorSpec::Kind::kEmbedding, {vocab, hidden}, 1.0f});
    AddBlock(specs, config, layer);
  }
  AddNorm(specs, "model.norm.weight", hidden);
  if (!config.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", TensorSpec::Kind::kEmbedding, {vocab, hidden}, head_std});
  }
  return specs;
}

uint64_t TensorDataBytes(const ModelConfig& config, const TensorSpec& spec) {
  const int block_rows = config.quantization ? config.quantization->block_rows : 128;
  const int block_cols = config.quantization ? config.quantization->block_cols : 128;
  uint64_t elements = 1;
  for (int64_t dim : spec.shape) elements *= static_cast<uint64_t>(dim);
  switch (spec.kind) {
    case TensorSpec::Kind::kLinear:
      return elements + 4ull * ((spec.shape[0] + block_rows - 1) / block_rows) *
                            ((spec.shape[1] + block_cols - 1) / block_cols);
    case TensorSpec::Kind::kGateBias:
      return 4 * elements;
    default:
      return 2 * elements;
  }
}

uint64_t CheckpointDataBytes(const ModelConfig& config) {
  uint64_t total = 0;
  for (const TensorSpec& spec : CheckpointLayout(config)) total += TensorDataBytes(config, spec);
  return total;
}

std::vector<float> GateSkewBias(int num_experts, uint64_t seed, const std::string& tensor_name,
                                double gate_skew) {
  std::vector<float> bias(static_cast<size_t>(std::max(num_experts, 0)), 0.0f);
  if (gate_skew == 0) return bias;
  // Fisher-Yates with explicit draws (not std::shuffle, whose use of the engine is unspecified).
  std::mt19937_64 engine(TensorSeed(seed, tensor_name + "#gate_skew"));
  std::vector<int> order(bias.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[engine() % i]);
  for (size_t rank = 0; rank < order.size(); ++rank) {
    bias[order[rank]] = static_cast<float>(gate_skew / static_cast<double>(rank + 1));
  }
  return bias;
}

absl::Status WriteRandomCheckpoint(const ModelConfig& config, uint64_t seed, uint64_t shard_bytes,
                                   const std::string& directory, double gate_skew) {
  if (!std::isfinite(gate_skew) || gate_skew < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gate skew must be a finite number >= 0, got ", gate_skew));
  }
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> writer =
      CheckpointWriter::Create(directory, shard_bytes);
  if (!writer.ok()) return writer.status();
  const int block_rows = config.quantization ? config.quantization->block_rows : 128;
  const int block_cols = config.quantization ? config.quantization->block_cols : 128;
  std::vector<float> values;
  for (const TensorSpec& spec : CheckpointLayout(config)) {
    int64_t count = 1;
    for (int64_t dim : spec.shape) count *= dim;
    values.resize(static_cast<size_t>(count));
    std::mt19937_64 engine(TensorSeed(seed, spec.name));
    const float mean = spec.kind == TensorSpec::Kind::kNorm ? 1.0f : 0.0f;
    FillNormal(engine, mean, spec.std, values.data(), count);
    absl::Status status;
    switch (spec.kind) {
      case TensorSpec::Kind::kLinear: {
        const std::string prefix = spec.name.substr(0, spec.name.size() - 7);  // ".weight"
        if (config.quantization.has_value()) {
          status = (*writer)->AddFp8Linear(prefix, spec.shape[0], spec.shape[1], values.data(),
                                           block_rows, block_cols);
        } else {
          status = (*writer)->AddBF16(spec.name, spec.shape, values.data());
        }
        break;
      }
      case TensorSpec::Kind::kGateBias: {
        if (gate_skew > 0) {
          const std::vector<float> skew =
              GateSkewBias(static_cast<int>(count), seed, spec.name, gate_skew);
          for (int64_t i = 0; i < count; ++i) values[i] += skew[i];
        }
        status = (*writer)->AddF32(spec.name, spec.shape, values.data());
        break;
      }
      default:
        status = (*writer)->AddBF16(spec.name, spec.shape, values.data());
    }
    if (!status.ok()) return status;
  }
  if (absl::Status status = (*writer)->Finish(); !status.ok()) return status;
  return WriteConfigFiles(directory, config);
}

}  // namespace moemesh::checkpoint
