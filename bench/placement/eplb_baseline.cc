#include "bench/placement/eplb_baseline.h"

#include <algorithm>
#include <numeric>

namespace moemesh::bench {

EplbLayer EplbGlobal(const std::vector<double>& load, int physical, int packs) {
  const int experts = static_cast<int>(load.size());
  EplbLayer layer;
  layer.replica_count.assign(experts, 1);
  // replicate_experts: argmax of load / count, first index on ties (torch.max semantics).
  for (int added = experts; added < physical; ++added) {
    int best = 0;
    for (int e = 1; e < experts; ++e) {
      if (load[e] / layer.replica_count[e] > load[best] / layer.replica_count[best]) best = e;
    }
    ++layer.replica_count[best];
  }
  std::vector<double> weights;
  for (int e = 0; e < experts; ++e) {
    for (int r = 0; r < layer.replica_count[e]; ++r) {
      weights.push_back(load[e] / layer.replica_count[e]);
    }
  }
  // balanced_packing: heaviest first (stable on ties), lightest pack with room.
  std::vector<int> order(weights.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weights[a] > weights[b]; });
  const int per_pack = physical / packs;
  layer.pack_load.assign(packs, 0.0);
  std::vector<int> items(packs, 0);
  for (int i : order) {
    int best = -1;
    for (int p = 0; p < packs; ++p) {
      if (items[p] == per_pack) continue;
      if (best < 0 || layer.pack_load[p] < layer.pack_load[best]) best = p;
    }
    layer.pack_load[best] += weights[i];
    ++items[best];
  }
  return layer;
}

double Imbalance(const std::vector<double>& pack_load) {
  const double total = std::accumulate(pack_load.begin(), pack_load.end(), 0.0);
  const double max = *std::max_element(pack_load.begin(), pack_load.end());
  if (total <= 0) return 1.0;
  return max / (total / pack_load.size());
}

}  // namespace moemesh::bench
