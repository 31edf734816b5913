// `moemesh place --load LOAD.json --expert-nodes N [--redundant-experts R] [--min-replicas K]
//                [--max-experts-per-layer C] [--use recent] [--node-ids A,B,..]
//                [--keep-placement [--keep-tolerance T]]`
// Plans an expert placement (core/placement/planner.h) from the router's `GET /v1/experts/load`
// body and prints it as {"experts":[{"layer","expert","nodes"}]} on stdout (node indices
// 0..N-1 as strings, or --node-ids); the predicted balancedness goes to stderr. With
// --keep-placement the body's current placement is the planner's `previous` (few moves).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
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
    "                     [--node-ids A,B,...] [--keep-placement [--keep-tolerance T]]\n"
    "  --load                   the JSON of the router's GET /v1/experts/load (- for stdin)\n"
    "  --expert-nodes           number of expert nodes N; they are named \"0\" .. \"N-1\"\n"
    "  --node-ids               comma-separated node names instead (N = their number)\n"
    "  --redundant-experts      physical experts per layer beyond K per logical expert\n"
    "                           (default 0; rounded down so every node holds the same number)\n"
    "  --min-replicas           replicas of every expert on distinct nodes (default 1; 2\n"
    "                           survives losing any one node)\n"
    "  --max-experts-per-layer  capacity of every node (default: no limit of its own)\n"
    "  --use                    which counts of each layer to balance: total (default) or\n"
    "                           recent (the router's load window)\n"
    "  --keep-placement         start from the body's placement.experts (node ids as named\n"
    "                           by --node-ids): prefer plans that move few replicas, and say\n"
    "                           how many move\n"
    "  --keep-tolerance         with --keep-placement: balancedness the plan may give up to\n"
    "                           move fewer replicas (default 0.01)\n"
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
                                 {"node-ids"},
                                 {"keep-placement", true},
                                 {"keep-tolerance"},
                                 {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "place: %s\n%s", std::string(parsed.status().message()).c_str(), kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!parsed->Has("load") || !(parsed->Has("expert-nodes") || parsed->Has("node-ids")) ||
      !parsed->positionals().empty()) {
    std::fprintf(stderr, "place: --load and --expert-nodes (or --node-ids) are required\n%s",
                 kUsage);
    return 2;
  }
  std::vector<std::string> node_ids;
  if (std::optional<std::string> ids = parsed->Get("node-ids")) {
    node_ids = absl::StrSplit(*ids, ',');
    if (std::set<std::string>(node_ids.begin(), node_ids.end()).size() != node_ids.size() ||
        std::find(node_ids.begin(), node_ids.end(), "") != node_ids.end()) {
      std::fprintf(stderr, "place: --node-ids must be distinct non-empty names\n");
      return 2;
    }
  }
  absl::StatusOr<int64_t> nodes =
      parsed->GetInt("expert-nodes", static_cast<int64_t>(node_ids.size()));
  absl::StatusOr<double> keep_tolerance = parsed->GetDouble("keep-tolerance", 0.01);
  absl::StatusOr<int64_t> redundant = parsed->GetInt("redundant-experts", 0);
  absl::StatusOr<int64_t> min_replicas = parsed->GetInt("min-replicas", 1);
  absl::StatusOr<int64_t> capacity = parsed->GetInt("max-experts-per-layer", 0);
  for (const absl::Status& status :
       {nodes.status(), redundant.status(), min_replicas.status(), capacity.status(),
        keep_tolerance.status()}) {
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
  if (!node_ids.empty() && static_cast<int64_t>(node_ids.size()) != *nodes) {
    std::fprintf(stderr, "place: --node-ids names %zu nodes but --expert-nodes is %lld\n",
                 node_ids.size(), static_cast<long long>(*nodes));
    return 2;
  }
  if (!(*keep_tolerance >= 0 && *keep_tolerance <= 1)) {
    std::fprintf(stderr, "place: --keep-tolerance must be within [0, 1]\n");
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
    input.nodes.push_back(placement::PlannerNode{
        node_ids.empty() ? std::to_string(n) : node_ids[n], static_cast<int>(*capacity)});
  }
  const bool keep = parsed->Has("keep-placement");
  if (keep) {
    const nlohmann::json* experts = nullptr;
    if (body->contains("placement") && (*body)["placement"].is_object() &&
        (*body)["placement"].contains("experts")) {
      experts = &(*body)["placement"]["experts"];
    }
    if (experts == nullptr) {
      std::fprintf(stderr, "place: --keep-placement: the body has no placement.experts\n");
      return 1;
    }
    absl::StatusOr<std::vector<std::vector<std::vector<std::string>>>> previous =
        placement::ParsePlacementJson(*experts, *loads);
    if (!previous.ok()) {
      std::fprintf(stderr, "place: %s\n", std::string(previous.status().message()).c_str());
      return 1;
    }
    input.previous = *std::move(previous);
    input.keep_tolerance = *keep_tolerance;
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
  // Slots per node, runs of equal values as "5 x 64".
  std::string slots;
  for (size_t n = 0; n < plan->node_slots.size();) {
    size_t end = n;
    while (end < plan->node_slots.size() && plan->node_slots[end] == plan->node_slots[n]) ++end;
    slots += (n ? ", " : "") + std::to_string(plan->node_slots[n]) +
             (end - n > 1 ? " x " + std::to_string(end - n) : "");
    n = end;
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
  if (keep) {
    std::fprintf(stderr, "place: %d of %lld replicas move (are on a node that does not hold them "
                 "now)\n", plan->moved_replicas,
                 static_cast<long long>(plan->physical_experts) * plan->layers.size());
  }
  return 0;
}

}  // namespace moemesh::cli
