#include "core/placement/packing.h"

#include <algorithm>
#include <cassert>
#include <deque>
#include <numeric>
#include <queue>
#include <utility>

namespace moemesh::placement::internal {

namespace {

// Gale-Ryser for replica counts against node slots: an assignment with at most one replica of
// an expert per node exists iff, for every k, the k largest counts sum to at most
// capacity_[k] = sum over nodes of min(slots, k) (and the totals match). Tracks a histogram
// of the counts so that checks cost one pass over the distinct count values.
class CountFeasibility {
 public:
  CountFeasibility(const std::vector<int>& slots, const std::vector<int>& counts)
      : capacity_(counts.size() + 1, 0) {
    for (size_t k = 0; k < capacity_.size(); ++k) {
      for (int s : slots) capacity_[k] += std::min<int64_t>(s, static_cast<int64_t>(k));
    }
    for (int c : counts) Add(c);
  }

  // Whether the counts satisfy the condition with `extra` added to every k at or past the
  // first position of value `from` (extra 1, from c: the effect of raising one count c to
  // c + 1); extra 0 checks the counts as they are.
  bool Holds(int from, int extra) const {
    int64_t k = 0, sum = 0;
    for (int v = static_cast<int>(histogram_.size()) - 1; v >= 0; --v) {
      const int64_t n = histogram_[v];
      if (n == 0) continue;
      // Within a run of equal counts the slack (capacity - sum) is concave: check its ends.
      const int64_t add = v <= from ? extra : 0;
      if (sum + v + add > capacity_[k + 1] || sum + n * v + add > capacity_[k + n]) return false;
      k += n;
      sum += n * v;
    }
    return true;
  }
  bool CanRaise(int count) const { return Holds(count, 1); }
  bool Feasible() const { return Holds(0, 0); }

  void Add(int count) {
    if (count >= static_cast<int>(histogram_.size())) histogram_.resize(count + 1, 0);
    ++histogram_[count];
  }
  void Raise(int count) {
    --histogram_[count];
    Add(count + 1);
  }

 private:
  std::vector<int64_t> capacity_;
  std::vector<int> histogram_;
};

// Adds replicas to `counts` up to sum(slots), each to the expert with the highest load / count
// (ties: lower index) that is below max_count and can take one more without making the counts
// impossible to assign (an expert that cannot never can later: the other counts only grow).
void Grow(const std::vector<double>& load, const std::vector<int>& slots, int max_count,
          std::vector<int>& counts) {
  const int experts = static_cast<int>(load.size());
  int64_t missing = std::accumulate(slots.begin(), slots.end(), int64_t{0}) -
                    std::accumulate(counts.begin(), counts.end(), int64_t{0});
  CountFeasibility feasibility(slots, counts);
  auto lower_priority = [&](int a, int b) {
    const double ra = load[a] / counts[a], rb = load[b] / counts[b];
    if (ra != rb) return ra < rb;
    return a > b;
  };
  std::priority_queue<int, std::vector<int>, decltype(lower_priority)> heap(lower_priority);
  for (int e = 0; e < experts; ++e) {
    if (counts[e] < max_count) heap.push(e);
  }
  while (missing > 0 && !heap.empty()) {
    const int e = heap.top();
    heap.pop();
    if (!feasibility.CanRaise(counts[e])) continue;
    feasibility.Raise(counts[e]);
    ++counts[e];
    --missing;
    if (counts[e] < max_count) heap.push(e);
  }
}

}  // namespace

std::vector<int> ReplicaCounts(const std::vector<double>& load, const std::vector<int>& slots,
                               int min_replicas, int max_count) {
  std::vector<int> counts(load.size(), min_replicas);
  Grow(load, slots, max_count, counts);
  return counts;
}

std::vector<int> AdjustCounts(const std::vector<double>& load, std::vector<int> counts,
                              const std::vector<int>& slots, int min_replicas, int max_count) {
  const int experts = static_cast<int>(load.size());
  const int64_t physical = std::accumulate(slots.begin(), slots.end(), int64_t{0});
  int64_t sum = 0;
  for (int& c : counts) {
    c = std::clamp(c, min_replicas, max_count);
    sum += c;
  }
  for (; sum > physical; --sum) {
    int best = -1;
    for (int e = 0; e < experts; ++e) {
      if (counts[e] <= min_replicas) continue;
      if (best < 0 || load[e] / (counts[e] - 1) < load[best] / (counts[best] - 1)) best = e;
    }
    if (best < 0) return {};
    --counts[best];
  }
  if (!CountFeasibility(slots, counts).Feasible()) return {};
  Grow(load, slots, max_count, counts);
  return counts;
}

bool CountsFit(const std::vector<int>& counts, const std::vector<int>& slots) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0}) ==
             std::accumulate(slots.begin(), slots.end(), int64_t{0}) &&
         CountFeasibility(slots, counts).Feasible();
}

LayerAssignment::LayerAssignment(const std::vector<double>& load, const std::vector<int>& counts,
                                 const std::vector<int>& slots)
    : counts_(counts),
      weight_(load.size()),
      slots_(slots),
      items_(slots.size()),
      holds_(slots.size() * load.size(), 0),
      placed_(load.size(), 0),
      node_load_(slots.size(), 0.0) {
  for (size_t e = 0; e < load.size(); ++e) weight_[e] = load[e] / std::max(1, counts[e]);
}

void LayerAssignment::Place(int node, int expert) {
  assert(HasRoom(node) && !Holds(node, expert));
  items_[node].push_back(expert);
  holds_[static_cast<size_t>(node) * counts_.size() + expert] = 1;
  ++placed_[expert];
  node_load_[node] += weight_[expert];
}

void LayerAssignment::Remove(int node, int expert) {
  std::vector<int>& items = items_[node];
  items.erase(std::find(items.begin(), items.end(), expert));
  holds_[static_cast<size_t>(node) * counts_.size() + expert] = 0;
  --placed_[expert];
  node_load_[node] -= weight_[expert];
}

bool LayerAssignment::PlaceBest(int expert) {
  int best = -1;
  for (int node = 0; node < num_nodes(); ++node) {
    if (!HasRoom(node) || Holds(node, expert)) continue;
    if (best < 0 || node_load_[node] < node_load_[best]) best = node;
  }
  if (best >= 0) {
    Place(best, expert);
    return true;
  }
  return Augment(expert);
}

// Residual-graph search of the bipartite (expert, node) assignment: a node u without `expert`
// takes it and gives up one of its experts f to a node v without f, and so on until a node with
// a free slot takes the last one. A shortest such path exists whenever any assignment with one
// more replica of `expert` does (max-flow augmenting paths).
bool LayerAssignment::Augment(int expert) {
  const int nodes = num_nodes();
  std::vector<int> from(nodes, -1), receives(nodes, -1);
  std::vector<uint8_t> visited(nodes, 0);
  std::deque<int> queue;
  for (int node = 0; node < nodes; ++node) {
    if (slots_[node] == 0 || Holds(node, expert)) continue;
    visited[node] = 1;
    receives[node] = expert;
    queue.push_back(node);
  }
  int end = -1;
  while (!queue.empty() && end < 0) {
    const int u = queue.front();
    queue.pop_front();
    for (int given : items_[u]) {
      for (int v = 0; v < nodes && end < 0; ++v) {
        if (visited[v] || slots_[v] == 0 || Holds(v, given)) continue;
        visited[v] = 1;
        receives[v] = given;
        from[v] = u;
        if (HasRoom(v)) end = v;
        queue.push_back(v);
      }
      if (end >= 0) break;
    }
  }
  if (end < 0) return false;
  for (int node = end; node >= 0; node = from[node]) {
    if (from[node] >= 0) Remove(from[node], receives[node]);
    Place(node, receives[node]);
  }
  return true;
}

bool LayerAssignment::PlaceRemaining() {
  std::vector<int> order;
  for (int e = 0; e < static_cast<int>(counts_.size()); ++e) {
    for (int i = placed_[e]; i < counts_[e]; ++i) order.push_back(e);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weight_[a] > weight_[b]; });
  bool all = true;
  for (int e : order) all = PlaceBest(e) && all;
  return all;
}

void LayerAssignment::Improve(int max_steps, double good_enough) {
  const int nodes = num_nodes();
  if (nodes < 2) return;
  const double total = std::accumulate(node_load_.begin(), node_load_.end(), 0.0);
  const double epsilon = 1e-12 * std::max(total, 1e-300);
  std::vector<int> by_load(nodes);
  for (int step = 0; step < max_steps; ++step) {
    const int m = static_cast<int>(std::max_element(node_load_.begin(), node_load_.end()) -
                                   node_load_.begin());
    const double max_load = node_load_[m];
    if (max_load <= good_enough) return;
    double best = max_load - epsilon;
    int best_node = -1, best_out = -1, best_in = -1;  // best_in -1: a move, not a swap
    // Partners lightest first: a partner's load only grows, so none at or above `best` helps.
    std::iota(by_load.begin(), by_load.end(), 0);
    std::stable_sort(by_load.begin(), by_load.end(),
                     [&](int a, int b) { return node_load_[a] < node_load_[b]; });
    for (int out : items_[m]) {
      const double w_out = weight_[out];
      for (int j : by_load) {
        if (node_load_[j] >= best) break;
        if (j == m || Holds(j, out)) continue;
        const double lj = node_load_[j];
        if (HasRoom(j)) {
          const double candidate = std::max(max_load - w_out, lj + w_out);
          if (candidate < best) {
            best = candidate;
            best_node = j, best_out = out, best_in = -1;
          }
        }
        for (int in : items_[j]) {
          const double delta = w_out - weight_[in];
          if (delta <= 0 || Holds(m, in)) continue;
          const double candidate = std::max(max_load - delta, lj + delta);
          if (candidate < best) {
            best = candidate;
            best_node = j, best_out = out, best_in = in;
          }
        }
      }
    }
    if (best_node < 0) return;
    Remove(m, best_out);
    if (best_in >= 0) {
      Remove(best_node, best_in);
      Place(m, best_in);
    }
    Place(best_node, best_out);
  }
}

double LayerAssignment::MaxLoad() const {
  return node_load_.empty() ? 0.0 : *std::max_element(node_load_.begin(), node_load_.end());
}

std::vector<std::vector<int>> LayerAssignment::Replicas() const {
  std::vector<std::vector<int>> replicas(counts_.size());
  for (int node = 0; node < num_nodes(); ++node) {
    for (int e : items_[node]) replicas[e].push_back(node);
  }
  // Nodes were visited in ascending order, so each list is already sorted.
  return replicas;
}

}  // namespace moemesh::placement::internal
