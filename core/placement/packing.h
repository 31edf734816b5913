// The pieces of one layer's plan (internal to core/placement; planner.h is the API):
// replica counts by highest load per replica, and LayerAssignment, which packs replicas onto
// nodes under slot counts and the one-replica-of-an-expert-per-node rule and improves the
// packing by local search. Loads are per logical expert; a replica of expert e weighs
// load[e] / count[e].
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moemesh::placement::internal {

// Replica count per expert for nodes with `slots` physical experts each (sum(slots) in all):
// min_replicas each, then each further replica to the expert with the highest load / count
// (ties: lower index) whose count is below max_count, skipping any increase that would leave no
// assignment with at most one replica of an expert per node (Gale-Ryser; so the result always
// packs). EPLB's replicate_experts with a cap and that rule. The counts sum to sum(slots)
// whenever max_count * load.size() >= sum(slots) and min_replicas * load.size() <= sum(slots)
// fits (check with CountsFit).
std::vector<int> ReplicaCounts(const std::vector<double>& load, const std::vector<int>& slots,
                               int min_replicas, int max_count);

// `start` counts (e.g. the previous placement's) clamped to [min_replicas, max_count], brought
// down to sum(slots) by removing replicas where load / (count - 1) is lowest, then grown as
// ReplicaCounts does. Empty when no assignable counts near `start` were found.
std::vector<int> AdjustCounts(const std::vector<double>& load, std::vector<int> start,
                              const std::vector<int>& slots, int min_replicas, int max_count);

// Whether `counts` sum to sum(slots) and can be assigned with at most one replica of an expert
// per node.
bool CountsFit(const std::vector<int>& counts, const std::vector<int>& slots);

// One layer's assignment of replicas to nodes. Node n holds at most slots[n] replicas and at
// most one replica of each expert.
class LayerAssignment {
 public:
  LayerAssignment(const std::vector<double>& load, const std::vector<int>& counts,
                  const std::vector<int>& slots);

  int num_nodes() const { return static_cast<int>(slots_.size()); }
  bool Holds(int node, int expert) const {
    return holds_[static_cast<size_t>(node) * counts_.size() + expert] != 0;
  }
  bool HasRoom(int node) const {
    return static_cast<int>(items_[node].size()) < slots_[node];
  }
  // Replicas of `expert` placed so far.
  int Placed(int expert) const { return placed_[expert]; }
  // Load of one replica of `expert`.
  double Weight(int expert) const { return weight_[expert]; }

  // Puts a replica of `expert` on `node`. Requires HasRoom(node) and !Holds(node, expert).
  void Place(int node, int expert);
  // Places one more replica of `expert` on the least loaded node with room that does not hold
  // it (ties: lower index). When every node with room holds it already, moves replicas along
  // the shortest augmenting path (BFS over nodes) to free a place. False when no assignment
  // can take it.
  bool PlaceBest(int expert);
  // Places every replica still missing (counts minus placed), heaviest replica first (ties:
  // lower expert index). False if some replica could not be placed.
  bool PlaceRemaining();
  // Local search: while some swap of a replica on the most loaded node with one on another node
  // (or a move to a node with a free slot) makes both nodes' loads lower than that maximum,
  // applies the best one (smallest resulting larger load; ties: first found in node, replica
  // order). At most `max_steps` steps; stops early once the maximum is at or below
  // `good_enough` (fewer swaps: fewer replicas moved away from where they were).
  void Improve(int max_steps, double good_enough = 0.0);

  double MaxLoad() const;
  const std::vector<double>& node_loads() const { return node_load_; }
  // replicas[expert] = nodes holding it, ascending.
  std::vector<std::vector<int>> Replicas() const;

 private:
  void Remove(int node, int expert);
  bool Augment(int expert);

  std::vector<int> counts_;
  std::vector<double> weight_;  // per expert: load / count
  std::vector<int> slots_;
  std::vector<std::vector<int>> items_;  // per node: experts it holds
  std::vector<uint8_t> holds_;           // [node * experts + expert]
  std::vector<int> placed_;
  std::vector<double> node_load_;
};

}  // namespace moemesh::placement::internal
