// Placeholder until the EPLB-grade planner lands: one replica per logical expert, expert e on
// node e % nodes. Replaced by the real algorithm (see planner.h).
#include "core/placement/planner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moemesh::placement {

double LayerBalancedness(const std::vector<std::vector<int>>& replicas,
                         const std::vector<double>& load, int num_nodes) {
  std::vector<double> node_load(num_nodes, 0.0);
  for (size_t e = 0; e < replicas.size(); ++e) {
    if (replicas[e].empty()) continue;
    const double share = load[e] / static_cast<double>(replicas[e].size());
    for (int node : replicas[e]) node_load[node] += share;
  }
  double total = 0, max_load = 0;
  for (double l : node_load) {
    total += l;
    max_load = std::max(max_load, l);
  }
  if (max_load <= 0) return 1.0;
  return total / num_nodes / max_load;
}

absl::StatusOr<PlacementPlan> PlanPlacement(const PlannerInput& input) {
  const int nodes = static_cast<int>(input.nodes.size());
  if (nodes == 0 || input.num_experts <= 0) {
    return absl::InvalidArgumentError("placement: need at least one expert node and expert");
  }
  PlacementPlan plan;
  double sum = 0, imbalance = 0;
  for (const std::vector<double>& layer_load : input.load) {
    if (static_cast<int>(layer_load.size()) != input.num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: a layer has ", layer_load.size(), " loads, expected ",
                       input.num_experts));
    }
    LayerPlacement layer;
    layer.replicas.resize(input.num_experts);
    for (int e = 0; e < input.num_experts; ++e) layer.replicas[e] = {e % nodes};
    layer.balancedness = LayerBalancedness(layer.replicas, layer_load, nodes);
    sum += layer.balancedness;
    imbalance += 1.0 / layer.balancedness;
    plan.layers.push_back(std::move(layer));
  }
  if (!plan.layers.empty()) {
    plan.mean_balancedness = sum / plan.layers.size();
    plan.mean_imbalance = imbalance / plan.layers.size();
  }
  return plan;
}

}  // namespace moemesh::placement
