// PlanPlacement: validation, slot counts per node, and per layer the choice between a fresh plan
// and one that keeps the previous placement (the steps are described in planner.h; replica
// counts, packing and local search are in packing.cc).
#include "core/placement/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/placement/packing.h"

namespace moemesh::placement {
namespace {

using internal::LayerAssignment;

// Local-search steps per layer: each step strictly lowers the maximum or the number of nodes at
// it, so this bound is only a guard.
int MaxImproveSteps(int physical) { return 8 * physical + 64; }

absl::Status Validate(const PlannerInput& input) {
  if (input.nodes.empty()) return absl::InvalidArgumentError("placement: no expert nodes");
  if (input.num_experts <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement: num_experts must be positive, got ", input.num_experts));
  }
  if (input.min_replicas < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement: min_replicas must be at least 1, got ", input.min_replicas));
  }
  if (input.redundant_experts < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement: redundant_experts must not be negative, got ", input.redundant_experts));
  }
  for (size_t layer = 0; layer < input.load.size(); ++layer) {
    const std::vector<double>& load = input.load[layer];
    if (static_cast<int>(load.size()) != input.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " has ",
                                                     load.size(), " loads, expected ",
                                                     input.num_experts));
    }
    for (size_t e = 0; e < load.size(); ++e) {
      if (!std::isfinite(load[e]) || load[e] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                       " has load ", load[e],
                                                       " (must be finite and >= 0)"));
      }
    }
  }
  if (!input.previous.empty()) {
    if (input.previous.size() != input.load.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: previous placement has ", input.previous.size(),
                       " layers, load has ", input.load.size()));
    }
    for (size_t layer = 0; layer < input.previous.size(); ++layer) {
      if (static_cast<int>(input.previous[layer].size()) != input.num_experts) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: previous placement of layer ", layer, " has ",
                         input.previous[layer].size(), " experts, expected ", input.num_experts));
      }
    }
    std::map<std::string, int> seen;
    for (const PlannerNode& node : input.nodes) {
      if (++seen[node.node_id] > 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "placement: node id '", node.node_id, "' appears twice (previous placement is by id)"));
      }
    }
  }
  return absl::OkStatus();
}

struct Slots {
  std::vector<int> per_node;
  int physical = 0;
};

// Water-filling of P = min_replicas * E + R physical experts under the node capacities (each at
// most E: one replica of an expert per node); see planner.h step 1.
absl::StatusOr<Slots> ComputeSlots(const PlannerInput& input) {
  const int nodes = static_cast<int>(input.nodes.size());
  const int experts = input.num_experts;
  const int64_t needed = static_cast<int64_t>(input.min_replicas) * experts;
  if (nodes < input.min_replicas) {
    return absl::FailedPreconditionError(absl::StrCat(
        "placement: min_replicas ", input.min_replicas, " needs ", input.min_replicas,
        " expert nodes (a node holds at most one replica of an expert), there are ", nodes));
  }
  std::vector<int> capacity(nodes);
  int64_t available = 0;
  for (int n = 0; n < nodes; ++n) {
    const int limit = input.nodes[n].max_experts_per_layer;
    capacity[n] = limit > 0 ? std::min(limit, experts) : experts;
    available += capacity[n];
  }
  if (available < needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "placement: ", needed, " physical experts per layer needed (", experts, " experts x ",
        input.min_replicas, " replicas each) but the ", nodes, " expert nodes can hold ",
        available, " (their capacities, at most one replica of an expert per node)"));
  }
  int64_t physical = std::min<int64_t>(needed + input.redundant_experts, available);
  auto filled = [&](int level) {
    int64_t sum = 0;
    for (int c : capacity) sum += std::min(c, level);
    return sum;
  };
  int low = 0, high = experts;  // largest level with filled(level) <= physical
  while (low < high) {
    const int mid = (low + high + 1) / 2;
    if (filled(mid) <= physical) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  Slots slots;
  slots.per_node.resize(nodes);
  for (int n = 0; n < nodes; ++n) slots.per_node[n] = std::min(capacity[n], low);
  int64_t remainder = physical - filled(low);
  if (remainder > 0 && physical - remainder >= needed) {
    physical -= remainder;  // round the redundant experts down: every open node equal
  } else {
    for (int n = 0; n < nodes && remainder > 0; ++n) {
      if (capacity[n] > low) {
        ++slots.per_node[n];
        --remainder;
      }
    }
  }
  slots.physical = static_cast<int>(physical);
  return slots;
}

// Lower caps on replicas per expert worth a packing: a few just below the largest count and a
// few fractions of it, each at least min_replicas and leaving room for every physical expert.
std::vector<int> CapsToTry(const std::vector<int>& counts, int min_replicas, int physical) {
  const int top = *std::max_element(counts.begin(), counts.end());
  const int experts = static_cast<int>(counts.size());
  std::vector<int> caps;
  auto add = [&](int cap) {
    if (cap < top && cap >= std::max(min_replicas, 1) &&
        static_cast<int64_t>(cap) * experts >= physical &&
        std::find(caps.begin(), caps.end(), cap) == caps.end()) {
      caps.push_back(cap);
    }
  };
  for (int i = 1; i <= 4; ++i) add(top - i);
  for (double f : {0.9, 0.8, 0.7, 0.6, 0.5}) add(static_cast<int>(std::lround(top * f)));
  std::sort(caps.rbegin(), caps.rend());
  return caps;
}

struct Candidate {
  std::vector<std::vector<int>> replicas;
  double score = 1.0;
  double balancedness = 1.0;
  int moved = 0;
};

int CountMoved(const std::vector<std::vector<int>>& replicas,
               const std::vector<std::vector<int>>* previous) {
  int moved = 0;
  for (size_t e = 0; e < replicas.size(); ++e) {
    for (int node : replicas[e]) {
      if (previous == nullptr || std::find((*previous)[e].begin(), (*previous)[e].end(), node) ==
                                     (*previous)[e].end()) {
        ++moved;
      }
    }
  }
  return moved;
}

// Renames the fresh plan's nodes (only between nodes with equal slots, so every constraint
// still holds) to overlap the previous placement most: greedy matching by overlap.
std::vector<std::vector<int>> Relabel(const std::vector<std::vector<int>>& replicas,
                                      const std::vector<std::vector<int>>& previous,
                                      const std::vector<int>& slots) {
  const int nodes = static_cast<int>(slots.size());
  std::vector<int> overlap(static_cast<size_t>(nodes) * nodes, 0);  // [fresh * nodes + old]
  for (size_t e = 0; e < replicas.size(); ++e) {
    for (int fresh : replicas[e]) {
      for (int old : previous[e]) ++overlap[static_cast<size_t>(fresh) * nodes + old];
    }
  }
  std::vector<std::tuple<int, int, int>> pairs;  // (-overlap, fresh, old)
  for (int fresh = 0; fresh < nodes; ++fresh) {
    for (int old = 0; old < nodes; ++old) {
      const int count = overlap[static_cast<size_t>(fresh) * nodes + old];
      if (count > 0 && slots[fresh] == slots[old]) pairs.emplace_back(-count, fresh, old);
    }
  }
  std::sort(pairs.begin(), pairs.end());
  std::vector<int> label(nodes, -1);
  std::vector<uint8_t> taken(nodes, 0);
  for (const auto& [negative, fresh, old] : pairs) {
    if (label[fresh] < 0 && !taken[old]) {
      label[fresh] = old;
      taken[old] = 1;
    }
  }
  for (int fresh = 0; fresh < nodes; ++fresh) {
    for (int old = 0; old < nodes && label[fresh] < 0; ++old) {
      if (!taken[old] && slots[old] == slots[fresh]) {
        label[fresh] = old;
        taken[old] = 1;
      }
    }
  }
  std::vector<std::vector<int>> relabelled(replicas.size());
  for (size_t e = 0; e < replicas.size(); ++e) {
    for (int node : replicas[e]) relabelled[e].push_back(label[node]);
    std::sort(relabelled[e].begin(), relabelled[e].end());
  }
  return relabelled;
}

// `score`: balancedness under the planning weights (uniform for an all-zero layer), which picks
// between candidates; `balancedness`: under the real load, which is reported.
Candidate Finish(const LayerAssignment& assignment, const std::vector<double>& weights,
                 const std::vector<double>& load, int nodes,
                 const std::vector<std::vector<int>>* previous) {
  Candidate candidate;
  candidate.replicas = assignment.Replicas();
  candidate.score = LayerBalancedness(candidate.replicas, weights, nodes);
  candidate.balancedness = LayerBalancedness(candidate.replicas, load, nodes);
  candidate.moved = CountMoved(candidate.replicas, previous);
  return candidate;
}

// The replicas of `previous` that still fit: per expert up to counts[e] (lower node indices
// first), per node up to its slots (heavier replicas first). The rest is left to place.
LayerAssignment Sticky(const std::vector<double>& weights, const std::vector<int>& counts,
                       const std::vector<int>& slots,
                       const std::vector<std::vector<int>>& previous) {
  LayerAssignment sticky(weights, counts, slots);
  std::vector<std::vector<int>> keep(slots.size());
  for (size_t e = 0; e < previous.size(); ++e) {
    int kept = 0;
    for (int node : previous[e]) {
      if (kept < counts[e] && slots[node] > 0) {
        keep[node].push_back(static_cast<int>(e));
        ++kept;
      }
    }
  }
  for (size_t node = 0; node < slots.size(); ++node) {
    std::stable_sort(keep[node].begin(), keep[node].end(),
                     [&](int a, int b) { return sticky.Weight(a) > sticky.Weight(b); });
    for (int e : keep[node]) {
      if (sticky.HasRoom(static_cast<int>(node))) sticky.Place(static_cast<int>(node), e);
    }
  }
  return sticky;
}

// One layer: counts, fresh packing, and with `previous` the sticky packing; picks per
// planner.h step 5.
absl::StatusOr<LayerPlacement> PlanLayer(const PlannerInput& input, const Slots& slots,
                                         const std::vector<double>& load,
                                         const std::vector<std::vector<int>>* previous) {
  const int nodes = static_cast<int>(slots.per_node.size());
  // Scaled by a power of two so that the largest load is in [0.5, 1): exact (the plan and its
  // balancedness are those of `load`), and sums of huge counts cannot overflow.
  const double max_load = *std::max_element(load.begin(), load.end());
  int exponent = 0;
  if (max_load > 0) std::frexp(max_load, &exponent);
  std::vector<double> scaled(load.size());
  for (size_t e = 0; e < load.size(); ++e) scaled[e] = std::ldexp(load[e], -exponent);
  // All-zero load: plan as if uniform.
  const bool idle = max_load == 0;
  const std::vector<double> weights = idle ? std::vector<double>(load.size(), 1.0) : scaled;
  const int open_nodes = static_cast<int>(
      std::count_if(slots.per_node.begin(), slots.per_node.end(), [](int s) { return s > 0; }));
  const int steps = MaxImproveSteps(slots.physical);
  // Replica counts: EPLB's greedy (at most one replica per node), then the same greedy with a
  // lower cap on any one expert's replicas. An expert on every node adds its share to every
  // node, so a hot expert on fewer nodes sometimes packs better; keep the lowest maximum
  // (ties: the higher cap).
  std::vector<int> counts =
      internal::ReplicaCounts(weights, slots.per_node, input.min_replicas, open_nodes);
  if (!internal::CountsFit(counts, slots.per_node)) {
    // Guard: ComputeSlots gives at least min_replicas * E slots, which always fit.
    return absl::InternalError("placement: no assignable replica counts for the node slots");
  }
  LayerAssignment fresh(weights, counts, slots.per_node);
  bool complete = fresh.PlaceRemaining();
  fresh.Improve(steps);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  const double mean = total / nodes;
  for (int cap : CapsToTry(counts, input.min_replicas, slots.physical)) {
    if (complete && fresh.MaxLoad() <= mean * (1 + 1e-4)) break;  // balanced already
    std::vector<int> capped =
        internal::ReplicaCounts(weights, slots.per_node, input.min_replicas, cap);
    if (!internal::CountsFit(capped, slots.per_node)) continue;
    LayerAssignment trial(weights, capped, slots.per_node);
    const bool trial_complete = trial.PlaceRemaining();
    if (!trial_complete) continue;
    trial.Improve(steps);
    if (trial.MaxLoad() < fresh.MaxLoad() * (1 - 1e-12) || !complete) {
      fresh = std::move(trial);
      counts = std::move(capped);
      complete = true;
    }
  }
  if (!complete) {
    // Cannot happen: the counts passed CountsFit (an assignment exists) and PlaceBest's
    // augmenting paths find one from any partial assignment. A guard against a partial plan.
    return absl::InternalError("placement: replicas could not be packed onto the nodes");
  }
  const Candidate best = Finish(fresh, weights, scaled, nodes, previous);
  if (previous == nullptr) return LayerPlacement{best.replicas, best.balancedness, best.moved};
  std::vector<Candidate> candidates;
  {
    Candidate relabelled = best;
    relabelled.replicas = Relabel(best.replicas, *previous, slots.per_node);
    relabelled.moved = CountMoved(relabelled.replicas, previous);
    candidates.push_back(std::move(relabelled));
  }
  // Keep the previous replicas with the new counts, and with the previous counts (adjusted to
  // the new slots): the latter moves nothing when the previous placement still fits.
  std::vector<int> previous_counts(counts.size());
  for (size_t e = 0; e < counts.size(); ++e) {
    previous_counts[e] = static_cast<int>((*previous)[e].size());
  }
  previous_counts = internal::AdjustCounts(weights, previous_counts, slots.per_node,
                                           input.min_replicas, open_nodes);
  for (const std::vector<int>* keep_counts : {&counts, &previous_counts}) {
    if (keep_counts == &previous_counts &&
        (previous_counts == counts || !internal::CountsFit(previous_counts, slots.per_node))) {
      break;
    }
    LayerAssignment sticky = Sticky(weights, *keep_counts, slots.per_node, *previous);
    if (!sticky.PlaceRemaining()) continue;  // not expected either (see above)
    // Balancedness within keep_tolerance of the fresh plan's is all that is asked of it.
    const double fresh_balancedness = mean / fresh.MaxLoad();
    sticky.Improve(steps, fresh_balancedness - input.keep_tolerance > 0
                              ? mean / (fresh_balancedness - input.keep_tolerance)
                              : 0.0);
    candidates.push_back(Finish(sticky, weights, scaled, nodes, previous));
  }
  double top = 0;
  for (const Candidate& c : candidates) top = std::max(top, c.score);
  const Candidate* chosen = nullptr;
  for (const Candidate& c : candidates) {
    if (c.score < top - input.keep_tolerance - 1e-12) continue;
    if (chosen == nullptr || c.moved < chosen->moved) chosen = &c;
  }
  return LayerPlacement{chosen->replicas, chosen->balancedness, chosen->moved};
}

}  // namespace

std::vector<double> NodeLoads(const std::vector<std::vector<int>>& replicas,
                              const std::vector<double>& load, int num_nodes) {
  std::vector<double> node_load(num_nodes, 0.0);
  for (size_t e = 0; e < replicas.size() && e < load.size(); ++e) {
    if (replicas[e].empty()) continue;
    const double share = load[e] / static_cast<double>(replicas[e].size());
    for (int node : replicas[e]) node_load[node] += share;
  }
  return node_load;
}

double LayerBalancedness(const std::vector<std::vector<int>>& replicas,
                         const std::vector<double>& load, int num_nodes) {
  if (num_nodes <= 0) return 1.0;
  const std::vector<double> node_load = NodeLoads(replicas, load, num_nodes);
  const double total = std::accumulate(node_load.begin(), node_load.end(), 0.0);
  const double max_load = *std::max_element(node_load.begin(), node_load.end());
  if (max_load <= 0) return 1.0;
  return total / num_nodes / max_load;
}

absl::StatusOr<PlacementPlan> PlanPlacement(const PlannerInput& input) {
  if (absl::Status status = Validate(input); !status.ok()) return status;
  absl::StatusOr<Slots> slots = ComputeSlots(input);
  if (!slots.ok()) return slots.status();
  std::map<std::string, int> index;
  for (size_t n = 0; n < input.nodes.size(); ++n) {
    index[input.nodes[n].node_id] = static_cast<int>(n);
  }
  PlacementPlan plan;
  plan.physical_experts = slots->physical;
  plan.redundant_experts = slots->physical - input.min_replicas * input.num_experts;
  plan.node_slots = slots->per_node;
  double balancedness = 0, imbalance = 0;
  for (size_t layer = 0; layer < input.load.size(); ++layer) {
    std::vector<std::vector<int>> previous;
    if (!input.previous.empty()) {
      previous.resize(input.num_experts);
      for (int e = 0; e < input.num_experts; ++e) {
        for (const std::string& id : input.previous[layer][e]) {
          auto it = index.find(id);
          if (it != index.end()) previous[e].push_back(it->second);
        }
        std::sort(previous[e].begin(), previous[e].end());
        previous[e].erase(std::unique(previous[e].begin(), previous[e].end()), previous[e].end());
      }
    }
    absl::StatusOr<LayerPlacement> placed =
        PlanLayer(input, *slots, input.load[layer], input.previous.empty() ? nullptr : &previous);
    if (!placed.ok()) return placed.status();
    balancedness += placed->balancedness;
    imbalance += 1.0 / placed->balancedness;
    plan.min_balancedness = std::min(plan.min_balancedness, placed->balancedness);
    plan.moved_replicas += placed->moved_replicas;
    plan.layers.push_back(*std::move(placed));
  }
  if (!plan.layers.empty()) {
    plan.mean_balancedness = balancedness / plan.layers.size();
    plan.mean_imbalance = imbalance / plan.layers.size();
  }
  return plan;
}

}  // namespace moemesh::placement
