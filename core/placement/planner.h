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
//
// What PlanPlacement does per layer (planner.cc, packing.cc):
//  1. Slots: physical experts per layer P = min_replicas * num_experts + redundant_experts,
//     spread so that every node holds the same number (water-filling under each node's
//     capacity, never more than num_experts per node). When P does not divide evenly, the
//     redundant experts are rounded down until it does, unless that would go below
//     min_replicas * num_experts (then the slot counts differ by one, lower node indices
//     getting the extra slot).
//  2. Replica counts: every expert starts with min_replicas; each further slot goes to the
//     expert with the highest load per replica (ties: lower expert index), skipping increases
//     that would leave no assignment with one replica of an expert per node (Gale-Ryser).
//  3. Packing: replicas heaviest first (load / replicas), each onto the least loaded node that
//     has a free slot and does not hold that expert yet (ties: lower node index); when every
//     such node is full, replicas are moved along an augmenting path to make room.
//  4. Local search: while a swap of two replicas between the most loaded node and another node
//     (or a move to a node with a free slot) lowers the larger of the two nodes' loads below the
//     current maximum, apply the best such swap.
//  2-4 run for EPLB's counts and again with the largest replica count capped a little lower
//     (top - 1 .. top - 4, 90% .. 50% of top): an expert on every node adds its share to every
//     node, so fewer replicas of it sometimes pack better. The lowest maximum wins. (This is
//     what beats EPLB on very skewed loads; bench/README.md has the numbers.)
//  5. With a `previous` placement: a second plan starts from the replicas the previous placement
//     already has where they are (kept up to the new counts and slots; a third one keeps the
//     previous replica counts too), packs only the rest and runs the same local search, stopping
//     once within keep_tolerance of the fresh plan; the fresh plan's nodes are also relabelled
//     to overlap the previous placement most. The layer takes the candidate that moves the
//     fewest replicas among those within `keep_tolerance` of the best balancedness. For a live
//     router, keep_tolerance ~0.01 moves a few percent of the replicas when the load drifts,
//     where a plan from scratch moves most of them.
// Everything is deterministic: the same input gives the same plan. Cost: 58 layers x 256
// experts on 64 nodes take ~0.15 s (R = 64) to ~0.3 s (R = 128) of one core (bench_placement).
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
  // planner then gives it the even share (min_replicas * num_experts + redundant) / nodes).
  // Never more than num_experts are used (one replica of an expert per node).
  int max_experts_per_layer = 0;
};

struct PlannerInput {
  int num_experts = 0;  // logical experts per MoE layer (256 in DeepSeek-V3)
  // load[layer][expert]: routed rows (tokens) per logical expert over the load window; every
  // inner vector has num_experts entries. Layers are indexed 0..L-1 (the caller maps them to
  // model layer numbers). All zeros is valid (treated as uniform).
  std::vector<std::vector<double>> load;
  std::vector<PlannerNode> nodes;
  // Redundant physical experts per layer beyond one per logical expert (beyond min_replicas per
  // logical expert when that is > 1: load-driven replicas come on top of the failure copies,
  // issue 9). The planner may round it down so that every node holds the same number of
  // physical experts per layer when capacities allow, and uses no more than the nodes can
  // hold; the value actually used is returned in PlacementPlan.
  int redundant_experts = 0;
  // Every logical expert gets at least this many replicas on distinct nodes (failure
  // redundancy, issue 9); 1 = no failure redundancy.
  int min_replicas = 1;
  // Optional current placement, so that a re-plan moves few replicas (each moved replica is
  // read from the checkpoint by its new node): previous[layer][expert] = node_ids of
  // PlannerInput::nodes holding it. Ids not in `nodes` (a removed node) are ignored. Empty =
  // plan from scratch; otherwise one entry per load layer, each with num_experts entries.
  std::vector<std::vector<std::vector<std::string>>> previous;
  // With `previous`: a layer keeps the plan that moves fewer replicas when its balancedness is
  // at most this much below the best candidate's (0 = only when it costs no balance; ~0.01
  // suits a live router: a few percent of the replicas move when the load drifts).
  double keep_tolerance = 0.0;
};

struct LayerPlacement {
  // replicas[expert] = indices into PlannerInput::nodes, distinct, ascending, non-empty.
  std::vector<std::vector<int>> replicas;
  double balancedness = 1.0;  // predicted: mean / max node load for this layer
  // Replicas placed on a node that `previous` did not list for that expert (every replica when
  // there is no previous placement): what a switch to this plan has to load.
  int moved_replicas = 0;
};

struct PlacementPlan {
  std::vector<LayerPlacement> layers;  // one per PlannerInput::load layer
  int redundant_experts = 0;           // redundant physical experts per layer actually used
  double mean_balancedness = 1.0;      // mean over layers of LayerPlacement::balancedness
  double mean_imbalance = 1.0;         // mean over layers of max / mean node load
  double min_balancedness = 1.0;       // the worst layer's balancedness
  int physical_experts = 0;            // per layer: min_replicas * num_experts + redundant used
  std::vector<int> node_slots;         // per node: physical experts it holds in every layer
  int moved_replicas = 0;              // sum over layers of LayerPlacement::moved_replicas
};

// Errors: INVALID_ARGUMENT for inconsistent shapes, negative or non-finite loads, min_replicas
// < 1, redundant_experts < 0, a `previous` of the wrong shape or a node id given twice with a
// `previous`; FAILED_PRECONDITION when
// the nodes cannot hold every logical expert min_replicas times (message says how many physical
// experts per layer are needed and how many the nodes can hold).
absl::StatusOr<PlacementPlan> PlanPlacement(const PlannerInput& input);

// Predicted balancedness (mean / max node load) of one layer's given replica assignment under
// `load` (num_experts entries) over `num_nodes` nodes; 1.0 when no node has load.
double LayerBalancedness(const std::vector<std::vector<int>>& replicas,
                         const std::vector<double>& load, int num_nodes);

// Node loads of one layer's replica assignment: node_load[n] = sum over the experts n holds of
// load[expert] / replicas(expert). `replicas` indices must be in [0, num_nodes).
std::vector<double> NodeLoads(const std::vector<std::vector<int>>& replicas,
                              const std::vector<double>& load, int num_nodes);

}  // namespace moemesh::placement
