// `moemesh plan (--model-config config.json | --model DIR) --gpu-memory 80GiB [...]`: sizes a
// deployment (core/placement/cluster_sizing.h), prints it (text or --json), and with
// --write-overlay DIR writes the Kubernetes overlay's generated part: plan.yaml (replicas and
// pod resources of both pools, the expert HPA's bounds) and plan.env (the serving flags merged
// into the moemesh-serving ConfigMap), plus a kustomization.yaml when DIR has none.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/checkpoint/checkpoint.h"
#include "core/placement/cluster_sizing.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

namespace fs = std::filesystem;
using placement::ClusterSizing;

constexpr char kUsage[] =
    "usage: moemesh plan (--model-config config.json | --model DIR) --gpu-memory SIZE\n"
    "                    [--expert-nodes N] [--attention-nodes A] [--redundant-experts R]\n"
    "                    [--max-batch-tokens T] [--reserve-fraction F] [--json]\n"
    "                    [--write-overlay DIR] [--k8s-base DIR]\n"
    "Sizes a deployment: one GPU of SIZE (e.g. 80GiB) per attention node and per expert node.\n"
    "  --model-config       the model's config.json (weights are not needed)\n"
    "  --model              a checkpoint directory: its headers are read and its bytes reported\n"
    "  --expert-nodes       expert nodes (default: the fewest that hold every physical expert)\n"
    "  --attention-nodes    attention nodes (default 1)\n"
    "  --redundant-experts  redundant physical experts per MoE layer (default 0)\n"
    "  --max-batch-tokens   tokens per attention-node step (default 512)\n"
    "  --reserve-fraction   part of each GPU kept free (default 0.1)\n"
    "  --json               print one JSON object instead of text\n"
    "  --write-overlay      write plan.yaml, plan.env (and kustomization.yaml if absent) to DIR\n"
    "  --k8s-base           the kustomize base the new kustomization.yaml points at\n"
    "                       (default deploy/k8s/base)\n";

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string GiB(uint64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / kGiB); }
std::string WholeGiB(uint64_t bytes) { return absl::StrCat(bytes >> 30, "Gi"); }

// Bytes the checkpoint's own headers give for the same three parts, and its shard count.
struct MeasuredCheckpoint {
  int shards = 0;
  uint64_t expert_bytes = 0;
  uint64_t attention_bytes = 0;
  uint64_t mtp_bytes = 0;
};

absl::StatusOr<MeasuredCheckpoint> Measure(checkpoint::Checkpoint& model) {
  MeasuredCheckpoint measured;
  std::map<std::string, int> shards;
  const int layers = model.config().num_hidden_layers;
  for (const std::string& name : model.TensorNames()) {
    absl::StatusOr<const checkpoint::TensorInfo*> info = model.Find(name);
    if (!info.ok()) return info.status();
    shards[model.ShardOf(name)] = 1;
    const uint64_t bytes = (*info)->data_end - (*info)->data_begin;
    int layer = -1;
    if (name.rfind("model.layers.", 0) == 0) layer = std::atoi(name.c_str() + 13);
    if (layer >= layers) {
      measured.mtp_bytes += bytes;
    } else if (name.find(".mlp.experts.") != std::string::npos) {
      measured.expert_bytes += bytes;
    } else {
      measured.attention_bytes += bytes;
    }
  }
  measured.shards = static_cast<int>(shards.size());
  return measured;
}

nlohmann::ordered_json ToJson(const ClusterSizing& s, const checkpoint::ModelConfig& config,
                              uint64_t gpu_memory, int64_t max_batch_tokens,
                              const MeasuredCheckpoint* measured) {
  nlohmann::ordered_json json;
  json["gpu_memory_bytes"] = gpu_memory;
  json["usable_gpu_bytes"] = s.usable_gpu_bytes;
  json["moe_layers"] = s.moe_layers;
  json["routed_experts_per_layer"] = config.n_routed_experts;
  json["bytes_per_routed_expert"] = s.bytes_per_routed_expert;
  json["expert_bytes_total"] = s.expert_bytes_total;
  json["attention_weight_bytes"] = s.attention_weight_bytes;
  json["mtp_bytes"] = s.mtp_bytes;
  json["checkpoint_bytes"] = s.checkpoint_bytes;
  json["kv_bytes_per_token"] = s.kv_bytes_per_token;
  json["kv_cache_dtype"] = "float32";
  json["max_batch_tokens"] = max_batch_tokens;
  json["activation_bytes"] = s.activation_bytes;
  json["attention_nodes"] = s.attention_nodes;
  json["cache_tokens_per_attention_node"] = s.cache_tokens_per_attention_node;
  json["kv_cache_bytes_per_attention_node"] = s.kv_cache_bytes_per_attention_node;
  json["cache_tokens_total"] = s.cache_tokens_per_attention_node * s.attention_nodes;
  json["max_experts_per_node_per_layer"] = s.max_experts_per_node_per_layer;
  json["min_expert_nodes"] = s.min_expert_nodes;
  json["max_useful_expert_nodes"] = s.max_useful_expert_nodes;
  json["expert_nodes"] = s.expert_nodes;
  json["redundant_experts"] = s.redundant_experts;
  json["physical_experts_per_layer"] = s.physical_experts_per_layer;
  json["experts_per_node_per_layer"] = s.experts_per_node_per_layer;
  json["expert_node_weight_bytes"] = s.expert_node_weight_bytes;
  json["attention_pod"] = {{"nvidia.com/gpu", s.attention_pod.gpus},
                           {"memory_bytes", s.attention_pod.memory_bytes}};
  json["expert_pod"] = {{"nvidia.com/gpu", s.expert_pod.gpus},
                        {"memory_bytes", s.expert_pod.memory_bytes}};
  nlohmann::ordered_json placement;
  placement["mean_balancedness"] = s.placement.mean_balancedness;
  // The first MoE layer's replicas (every layer has the same shape under uniform load).
  placement["first_layer"] = config.MoeLayers().front();
  nlohmann::ordered_json replicas = nlohmann::ordered_json::array();
  for (const std::vector<int>& nodes : s.placement.layers.front().replicas) replicas.push_back(nodes);
  placement["first_layer_replicas"] = replicas;
  json["placement"] = placement;
  if (measured != nullptr) {
    json["checkpoint"] = {{"shards", measured->shards},
                          {"expert_bytes", measured->expert_bytes},
                          {"attention_bytes", measured->attention_bytes},
                          {"mtp_bytes", measured->mtp_bytes}};
  }
  return json;
}

void PrintText(const ClusterSizing& s, const checkpoint::ModelConfig& config, uint64_t gpu_memory,
               int64_t max_batch_tokens, const MeasuredCheckpoint* measured) {
  std::printf("GPU: %s (%llu bytes), usable %s after the reserve\n", GiB(gpu_memory).c_str(),
              static_cast<unsigned long long>(gpu_memory), GiB(s.usable_gpu_bytes).c_str());
  std::printf("\nweights as stored (FP8 + F32 block scales, BF16 embeddings and norms):\n");
  std::printf("  routed experts   %d layers x %d x %llu bytes = %llu bytes (%s)\n", s.moe_layers,
              config.n_routed_experts, static_cast<unsigned long long>(s.bytes_per_routed_expert),
              static_cast<unsigned long long>(s.expert_bytes_total),
              GiB(s.expert_bytes_total).c_str());
  std::printf("  attention side   %llu bytes (%s): embeddings, attention, dense MLPs, gates,\n"
              "                   shared experts, norms, lm_head\n",
              static_cast<unsigned long long>(s.attention_weight_bytes),
              GiB(s.attention_weight_bytes).c_str());
  std::printf("  MTP module       %llu bytes (not served)\n",
              static_cast<unsigned long long>(s.mtp_bytes));
  std::printf("  whole checkpoint %llu bytes\n", static_cast<unsigned long long>(s.checkpoint_bytes));
  if (measured != nullptr) {
    std::printf("  checkpoint headers: %d shards, experts %llu, attention %llu, MTP %llu bytes\n",
                measured->shards, static_cast<unsigned long long>(measured->expert_bytes),
                static_cast<unsigned long long>(measured->attention_bytes),
                static_cast<unsigned long long>(measured->mtp_bytes));
  }
  std::printf("\nattention pool: %d node(s)\n", s.attention_nodes);
  std::printf("  KV cache per token  %llu bytes (%d layers x (%d + %d) x 4, float32 latent cache)\n",
              static_cast<unsigned long long>(s.kv_bytes_per_token), config.num_hidden_layers,
              config.kv_lora_rank, config.qk_rope_head_dim);
  std::printf("  step workspace      %s for %lld batch tokens\n", GiB(s.activation_bytes).c_str(),
              static_cast<long long>(max_batch_tokens));
  std::printf("  cache capacity      %lld tokens per node (%s), %lld in all\n",
              static_cast<long long>(s.cache_tokens_per_attention_node),
              GiB(s.kv_cache_bytes_per_attention_node).c_str(),
              static_cast<long long>(s.cache_tokens_per_attention_node * s.attention_nodes));
  std::printf("  pod                 nvidia.com/gpu %d, memory %s\n", s.attention_pod.gpus,
              WholeGiB(s.attention_pod.memory_bytes).c_str());
  std::printf("\nexpert pool: %d node(s) (at least %d: one GPU holds %d experts per layer)\n",
              s.expert_nodes, s.min_expert_nodes, s.max_experts_per_node_per_layer);
  std::printf("  physical experts    %d per layer (%d logical + %d redundant)\n",
              s.physical_experts_per_layer, config.n_routed_experts, s.redundant_experts);
  std::printf("  per node            at most %d per layer, %s of weights\n",
              s.experts_per_node_per_layer, GiB(s.expert_node_weight_bytes).c_str());
  std::printf("  pod                 nvidia.com/gpu %d, memory %s\n", s.expert_pod.gpus,
              WholeGiB(s.expert_pod.memory_bytes).c_str());
  std::printf("  placement (uniform load): predicted balancedness %.3f\n",
              s.placement.mean_balancedness);
  const std::vector<std::vector<int>>& replicas = s.placement.layers.front().replicas;
  std::vector<std::vector<int>> held(s.expert_nodes);
  for (size_t expert = 0; expert < replicas.size(); ++expert) {
    for (int node : replicas[expert]) held[node].push_back(static_cast<int>(expert));
  }
  std::printf("  layer %d, experts held by each node:\n", config.MoeLayers().front());
  constexpr int kShownNodes = 12;
  for (int node = 0; node < s.expert_nodes && node < kShownNodes; ++node) {
    std::printf("    expert-%d: %s\n", node, absl::StrJoin(held[node], " ").c_str());
  }
  if (s.expert_nodes > kShownNodes) {
    std::printf("    ... (%d more; --json lists every replica)\n", s.expert_nodes - kShownNodes);
  }
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

// The pod resources block of one container (requests = limits, as GPUs require).
std::string Resources(const placement::PodResources& pod, const std::string& indent) {
  std::string text;
  for (const char* kind : {"requests", "limits"}) {
    absl::StrAppend(&text, indent, kind, ":\n", indent, "  nvidia.com/gpu: \"", pod.gpus, "\"\n",
                    indent, "  memory: ", WholeGiB(pod.memory_bytes), "\n");
  }
  return text;
}

// plan.yaml: strategic-merge patches over deploy/k8s/base (object and container names there).
std::string PlanYaml(const ClusterSizing& s, const std::string& command) {
  const std::string header = absl::StrCat(
      "# Written by `", command, "`.\n# Do not edit: change the command's flags and run it again.\n");
  const std::string indent = "          ";
  return absl::StrCat(
      header,
      "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: moemesh-expert-node\nspec:\n"
      "  replicas: ", s.expert_nodes, "\n  template:\n    spec:\n      containers:\n"
      "        - name: expert-node\n          resources:\n", Resources(s.expert_pod, indent + "  "),
      "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: moemesh-attention-node\n"
      "spec:\n  replicas: ", s.attention_nodes, "\n  template:\n    spec:\n      containers:\n"
      "        - name: attention-node\n          resources:\n",
      Resources(s.attention_pod, indent + "  "),
      // The expert pool never scales below what holds every physical expert, nor above one
      // node per physical expert of a layer (a node holds at least one per layer).
      "---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n"
      "  name: moemesh-expert-node\nspec:\n  minReplicas: ", s.min_expert_nodes,
      "\n  maxReplicas: ", std::max(s.max_useful_expert_nodes, s.expert_nodes), "\n",
      // The attention pool starts at the planned size (the router waits for that many) and
      // may grow to 4x on cache pressure.
      "---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n"
      "  name: moemesh-attention-node\nspec:\n  minReplicas: ", s.attention_nodes,
      "\n  maxReplicas: ", 4 * s.attention_nodes, "\n");
}

// plan.env: the serving flags (keys of the moemesh-serving ConfigMap, see base/serving.env).
std::string PlanEnv(const ClusterSizing& s, int64_t max_batch_tokens, int64_t max_position_embeddings,
                    const std::string& command) {
  return absl::StrCat("# Written by `", command, "`.\n", "EXPERT_NODES=", s.expert_nodes, "\n",
                      "ATTENTION_NODES=", s.attention_nodes, "\n",
                      "CACHE_TOKENS=", s.cache_tokens_per_attention_node, "\n",
                      // A sequence lives in one attention node's cache.
                      "MAX_MODEL_LEN=", std::min<int64_t>(s.cache_tokens_per_attention_node,
                                                          max_position_embeddings), "\n",
                      "MAX_BATCH_TOKENS=", max_batch_tokens, "\n");
}

absl::Status WriteOverlay(const fs::path& dir, const fs::path& base, const ClusterSizing& s,
                          int64_t max_batch_tokens, int64_t max_position_embeddings,
                          const std::string& command) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ",
                                                     error.message()));
  if (absl::Status status = WriteText(dir / "plan.yaml", PlanYaml(s, command)); !status.ok()) {
    return status;
  }
  if (absl::Status status = WriteText(dir / "plan.env",
                                        PlanEnv(s, max_batch_tokens, max_position_embeddings, command));
      !status.ok()) {
    return status;
  }
  if (fs::exists(dir / "kustomization.yaml")) return absl::OkStatus();
  const fs::path relative =
      fs::weakly_canonical(base).lexically_relative(fs::weakly_canonical(dir));
  return WriteText(
      dir / "kustomization.yaml",
      absl::StrCat("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                   "resources:\n  - ", relative.generic_string(), "\npatches:\n  - path: plan.yaml\n"
                   "configMapGenerator:\n  - name: moemesh-serving\n    behavior: merge\n"
                   "    envs:\n      - plan.env\n"));
}

}  // namespace

int RunPlan(const Arguments& arguments) {
  absl::StatusOr<ParsedArguments> parsed = ParseArguments(
      arguments, {{"model-config"}, {"model"}, {"gpu-memory"}, {"expert-nodes"},
                  {"attention-nodes"}, {"redundant-experts"}, {"max-batch-tokens"},
                  {"reserve-fraction"}, {"json", true}, {"write-overlay"}, {"k8s-base"},
                  {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "plan: %s\n%s", std::string(parsed.status().message()).c_str(), kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (parsed->Has("model-config") == parsed->Has("model") || !parsed->Has("gpu-memory") ||
      !parsed->positionals().empty()) {
    std::fprintf(stderr, "plan: give --gpu-memory and one of --model-config, --model\n%s", kUsage);
    return 2;
  }
  placement::SizingInput input;
  absl::StatusOr<uint64_t> gpu_memory = placement::ParseByteSize(*parsed->Get("gpu-memory"));
  absl::StatusOr<int64_t> expert_nodes = parsed->GetInt("expert-nodes", 0);
  absl::StatusOr<int64_t> attention_nodes = parsed->GetInt("attention-nodes", 1);
  absl::StatusOr<int64_t> redundant = parsed->GetInt("redundant-experts", 0);
  absl::StatusOr<int64_t> batch_tokens = parsed->GetInt("max-batch-tokens", 512);
  absl::StatusOr<double> reserve = parsed->GetDouble("reserve-fraction", 0.1);
  for (const absl::Status& status :
       {gpu_memory.status(), expert_nodes.status(), attention_nodes.status(), redundant.status(),
        batch_tokens.status(), reserve.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "plan: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  std::unique_ptr<checkpoint::Checkpoint> model;
  MeasuredCheckpoint measured;
  if (std::optional<std::string> dir = parsed->Get("model")) {
    absl::StatusOr<std::unique_ptr<checkpoint::Checkpoint>> opened =
        checkpoint::Checkpoint::Open(*dir);
    absl::StatusOr<MeasuredCheckpoint> measure =
        opened.ok() ? Measure(**opened) : absl::StatusOr<MeasuredCheckpoint>(opened.status());
    if (!measure.ok()) {
      std::fprintf(stderr, "plan: %s\n", std::string(measure.status().message()).c_str());
      return 1;
    }
    model = *std::move(opened);
    measured = *measure;
    input.config = model->config();
  } else {
    absl::StatusOr<checkpoint::ModelConfig> config =
        checkpoint::LoadModelConfig(*parsed->Get("model-config"));
    if (!config.ok()) {
      std::fprintf(stderr, "plan: %s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    input.config = *config;
  }
  input.gpu_memory_bytes = *gpu_memory;
  input.expert_nodes = static_cast<int>(*expert_nodes);
  input.attention_nodes = static_cast<int>(*attention_nodes);
  input.redundant_experts = static_cast<int>(*redundant);
  input.max_batch_tokens = *batch_tokens;
  input.reserve_fraction = *reserve;
  absl::StatusOr<ClusterSizing> sizing = placement::SizeCluster(input);
  if (!sizing.ok()) {
    std::fprintf(stderr, "plan: %s\n", std::string(sizing.status().message()).c_str());
    return absl::IsInvalidArgument(sizing.status()) ? 2 : 1;
  }
  const MeasuredCheckpoint* measured_ptr = model != nullptr ? &measured : nullptr;
  if (parsed->Has("json")) {
    std::printf("%s\n", ToJson(*sizing, input.config, input.gpu_memory_bytes,
                               input.max_batch_tokens, measured_ptr)
                            .dump(2)
                            .c_str());
  } else {
    PrintText(*sizing, input.config, input.gpu_memory_bytes, input.max_batch_tokens,
              measured_ptr);
  }
  if (std::optional<std::string> dir = parsed->Get("write-overlay")) {
    // The command that reproduces the plan, without the output options.
    std::string command = "moemesh plan";
    for (const char* name : {"model-config", "model", "gpu-memory", "expert-nodes",
                             "attention-nodes", "redundant-experts", "max-batch-tokens",
                             "reserve-fraction"}) {
      if (std::optional<std::string> value = parsed->Get(name)) {
        absl::StrAppend(&command, " --", name, " ", *value);
      }
    }
    const std::string base = parsed->Get("k8s-base").value_or("deploy/k8s/base");
    if (absl::Status status =
            WriteOverlay(*dir, base, *sizing, input.max_batch_tokens,
                         input.config.max_position_embeddings, command);
        !status.ok()) {
      std::fprintf(stderr, "plan: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "plan: wrote the overlay's plan.yaml and plan.env to %s\n", dir->c_str());
  }
  return 0;
}

}  // namespace moemesh::cli
