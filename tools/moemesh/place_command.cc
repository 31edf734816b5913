// `moemesh place --load LOAD.json --expert-nodes N [--redundant-experts R] [--min-replicas K]
//                [--max-experts-per-layer C] [--use recent]`
// Plans an expert placement (core/placement/planner.h) from the router's `GET /v1/experts/load`
// body and prints it as {"experts":[{"layer","expert","nodes"}]} on stdout (node indices
// 0..N-1 as strings); the predicted balancedness goes to stderr.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "core/placement/load_json.h"
#include "core/placement/planner.h"
#include "nlohmann/json.hpp"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

constexpr char kUsage[] =
    "usage: moemesh place --load LOAD.json --expert-nodes N [--redundant-experts R]\n"
    "                     [--min-replicas K] [--max-experts-per-layer C] [--use total|recent]\n"
    "  --load                   the JSON of the router's GET /v1/experts/load (- for stdin)\n"
    "  --expert-nodes           number of expert nodes N; they are named \"0\" .. \"N-1\"\n"
    "  --redundant-experts      physical experts per layer beyond K per logical expert\n"
    "                           (default 0; rounded down so every node holds the same number)\n"
    "  --min-replicas           replicas of every expert on distinct nodes (default 1; 2\n"
    "                           survives losing any one node)\n"
    "  --max-experts-per-layer  capacity of every node (default: no limit of its own)\n"
    "  --use                    which counts of each layer to balance: total (default) or\n"
    "                           recent (the router's load window)\n"
    "Prints {\"experts\":[{\"layer\":L,\"expert\":E,\"nodes\":[\"0\",\"3\"]},...]} on stdout and\n"
    "the predicted balancedness (mean / max node load) on stderr.\n";

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream file(path);
    if (!file) return absl::NotFoundError("cannot read --load file " + path);
    text << file.rdbuf();
  }
  nlohmann::json body = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return absl::InvalidArgumentError("--load " + path + " is not valid JSON");
  }
  return body;
}

}  // namespace

int RunPlace(const Arguments& arguments) {
  absl::StatusOr<ParsedArguments> parsed =
      ParseArguments(arguments, {{"load"},
                                 {"expert-nodes"},
                                 {"redundant-experts"},
                                 {"min-replicas"},
                                 {"max-experts-per-layer"},
                                 {"use"},
                                 {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "place: %s\n%s", std::string(parsed.status().message()).c_str(), kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!parsed->Has("load") || !parsed->Has("expert-nodes") || !parsed->positionals().empty()) {
    std::fprintf(stderr, "place: --load and --expert-nodes are required\n%s", kUsage);
    return 2;
  }
  absl::StatusOr<int64_t> nodes = parsed->GetInt("expert-nodes", 0);
  absl::StatusOr<int64_t> redundant = parsed->GetInt("redundant-experts", 0);
  absl::StatusOr<int64_t> min_replicas = parsed->GetInt("min-replicas", 1);
  absl::StatusOr<int64_t> capacity = parsed->GetInt("max-experts-per-layer", 0);
  for (const absl::Status& status :
       {nodes.status(), redundant.status(), min_replicas.status(), capacity.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "place: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  if (*nodes < 1 || *nodes > 1 << 16 || *redundant < 0 || *redundant > 1 << 24 ||
      *min_replicas < 1 || *min_replicas > 1 << 16 || *capacity < 0 || *capacity > 1 << 24) {
    std::fprintf(stderr,
                 "place: --expert-nodes and --min-replicas must be at least 1, "
                 "--redundant-experts and --max-experts-per-layer not negative\n");
    return 2;
  }
  const std::string use = parsed->Get("use").value_or("total");
  if (use != "total" && use != "recent") {
    std::fprintf(stderr, "place: --use must be total or recent, got '%s'\n", use.c_str());
    return 2;
  }
  absl::StatusOr<nlohmann::json> body = ReadJson(*parsed->Get("load"));
  if (!body.ok()) {
    std::fprintf(stderr, "place: %s\n", std::string(body.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<placement::LayerLoads> loads = placement::ParseExpertLoadJson(*body, use);
  if (!loads.ok()) {
    std::fprintf(stderr, "place: %s\n", std::string(loads.status().message()).c_str());
    return 1;
  }
  placement::PlannerInput input;
  input.num_experts = loads->num_experts;
  input.load = loads->load;
  input.redundant_experts = static_cast<int>(*redundant);
  input.min_replicas = static_cast<int>(*min_replicas);
  for (int64_t n = 0; n < *nodes; ++n) {
    input.nodes.push_back(placement::PlannerNode{std::to_string(n), static_cast<int>(*capacity)});
  }
  absl::StatusOr<placement::PlacementPlan> plan = placement::PlanPlacement(input);
  if (!plan.ok()) {
    std::fprintf(stderr, "place: %s\n", std::string(plan.status().message()).c_str());
    return 1;
  }
  std::fputs(placement::PlacementJson(*plan, loads->layer_numbers, input.nodes).dump().c_str(),
             stdout);
  std::fputc('\n', stdout);
  size_t worst = 0;
  for (size_t l = 0; l < plan->layers.size(); ++l) {
    if (plan->layers[l].balancedness < plan->layers[worst].balancedness) worst = l;
  }
  std::string slots;
  for (size_t n = 0; n < plan->node_slots.size(); ++n) {
    slots += (n ? "," : "") + std::to_string(plan->node_slots[n]);
  }
  std::fprintf(stderr,
               "place: %zu layers x %d experts on %lld nodes; %d physical experts per layer "
               "(%d redundant used of %lld asked; per node %s)\n"
               "place: predicted balancedness mean %.4f, min %.4f (layer %d); imbalance (max / "
               "mean node load) mean %.4f\n",
               plan->layers.size(), input.num_experts, static_cast<long long>(*nodes),
               plan->physical_experts, plan->redundant_experts,
               static_cast<long long>(*redundant), slots.c_str(), plan->mean_balancedness,
               plan->min_balancedness, loads->layer_numbers[worst], plan->mean_imbalance);
  return 0;
}

}  // namespace moemesh::cli
