// Expert placement planner: from per-layer load of each logical expert, choose how many replicas
// (physical experts) each logical expert gets and which expert node holds each replica, so that
// the most loaded node carries as little as possible. Used by the router's control plane (live
// re-planning) and by `moemesh place` / `moemesh plan`.
//
// Model: each replica of logical expert e serves load[e] / replicas(e) (rows spread evenly over
// replicas). Node load = sum over the replicas it holds. Balancedness of a layer = mean node load
// / max node load (1.0 is perfect); imbalance = its inverse. The algorithm follows DeepSeek's
// EPLB (replicate the expert with the highest load per replica, then balanced packing), with
// per-node capacities and the rule that a node never holds two replicas of one expert.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moemesh::placement {

// One expert node as the planner sees it.
struct PlannerNode {
  std::string node_id;
  // Physical experts this node can hold per MoE layer; <= 0 means "no limit of its own" (the
  // planner then gives it the even share (num_experts + redundant) / nodes).
  int max_experts_per_layer = 0;
};

struct PlannerInput {
  int num_experts = 0;  // logical experts per MoE layer (256 in DeepSeek-V3)
  // load[layer][expert]: routed rows (tokens) per logical expert over the load window; every
  // inner vector has num_experts entries. Layers are indexed 0..L-1 (the caller maps them to
  // model layer numbers). All zeros is valid (treated as uniform).
  std::vector<std::vector<double>> load;
  std::vector<PlannerNode> nodes;
  // Redundant physical experts per layer beyond one per logical expert. The planner may round
  // it down so that every node holds the same number of physical experts per layer when
  // capacities allow; the value actually used is returned in PlacementPlan.
  int redundant_experts = 0;
  // Every logical expert gets at least this many replicas on distinct nodes (failure
  // redundancy, issue 9); 1 = no failure redundancy.
  int min_replicas = 1;
};

struct LayerPlacement {
  // replicas[expert] = indices into PlannerInput::nodes, distinct, ascending, non-empty.
  std::vector<std::vector<int>> replicas;
  double balancedness = 1.0;  // predicted: mean / max node load for this layer
};

struct PlacementPlan {
  std::vector<LayerPlacement> layers;  // one per PlannerInput::load layer
  int redundant_experts = 0;           // redundant physical experts per layer actually used
  double mean_balancedness = 1.0;      // mean over layers of LayerPlacement::balancedness
  double mean_imbalance = 1.0;         // mean over layers of max / mean node load
};

// Errors: INVALID_ARGUMENT for inconsistent shapes or negative loads; FAILED_PRECONDITION when
// the nodes cannot hold every logical expert min_replicas times (message says how many physical
// experts per layer are needed and how many the nodes can hold).
absl::StatusOr<PlacementPlan> PlanPlacement(const PlannerInput& input);

// Predicted balancedness (mean / max node load) of one layer's given replica assignment under
// `load` (num_experts entries) over `num_nodes` nodes.
double LayerBalancedness(const std::vector<std::vector<int>>& replicas,
                         const std::vector<double>& load, int num_nodes);

}  // namespace moemesh::placement
