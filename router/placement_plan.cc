#include "router/placement_plan.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

namespace moemesh::router {

std::vector<moemesh::v1::ExpertReplicas> PlanEntries(const placement::PlacementPlan& plan,
                                                     const std::vector<std::string>& node_ids,
                                                     const std::vector<int>& moe_layers) {
  std::vector<moemesh::v1::ExpertReplicas> entries;
  for (size_t i = 0; i < plan.layers.size() && i < moe_layers.size(); ++i) {
    const placement::LayerPlacement& layer = plan.layers[i];
    for (size_t expert = 0; expert < layer.replicas.size(); ++expert) {
      moemesh::v1::ExpertReplicas entry;
      entry.set_layer(static_cast<uint32_t>(moe_layers[i]));
      entry.set_expert(static_cast<uint32_t>(expert));
      for (int node : layer.replicas[expert]) entry.add_node_ids(node_ids.at(node));
      entries.push_back(std::move(entry));
    }
  }
  return entries;
}

double PredictedBalancedness(const moemesh::v1::Placement& placement,
                             const std::vector<std::vector<double>>& load,
                             const std::vector<int>& moe_layers, int num_experts) {
  std::map<std::string, int> index;
  for (const auto& entry : placement.experts()) {
    for (const std::string& id : entry.node_ids()) index.emplace(id, 0);
  }
  int next = 0;
  for (auto& [id, i] : index) i = next++;
  if (index.empty() || moe_layers.empty()) return 1.0;
  std::map<int, int> layer_index;
  for (size_t i = 0; i < moe_layers.size(); ++i) layer_index[moe_layers[i]] = static_cast<int>(i);
  std::vector<std::vector<std::vector<int>>> replicas(
      moe_layers.size(), std::vector<std::vector<int>>(num_experts));
  for (const auto& entry : placement.experts()) {
    auto it = layer_index.find(static_cast<int>(entry.layer()));
    if (it == layer_index.end() || entry.expert() >= static_cast<uint32_t>(num_experts)) continue;
    for (const std::string& id : entry.node_ids()) {
      replicas[it->second][entry.expert()].push_back(index.at(id));
    }
  }
  double sum = 0;
  for (size_t i = 0; i < moe_layers.size(); ++i) {
    std::vector<double> layer_load(num_experts, 1.0);
    if (i < load.size() && static_cast<int>(load[i].size()) == num_experts) {
      double total = 0;
      for (double value : load[i]) total += value;
      if (total > 0) layer_load = load[i];
    }
    sum += placement::LayerBalancedness(replicas[i], layer_load, static_cast<int>(index.size()));
  }
  return sum / static_cast<double>(moe_layers.size());
}

bool SameAssignment(const moemesh::v1::Placement& a,
                    const std::vector<moemesh::v1::ExpertReplicas>& b) {
  using Key = std::pair<uint32_t, uint32_t>;
  auto collect = [](const auto& entries) {
    std::map<Key, std::set<std::string>> out;
    for (const auto& entry : entries) {
      out[{entry.layer(), entry.expert()}].insert(entry.node_ids().begin(), entry.node_ids().end());
    }
    return out;
  };
  return collect(a.experts()) == collect(b);
}

}  // namespace moemesh::router
