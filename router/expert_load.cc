#include "router/expert_load.h"

#include <algorithm>

namespace moemesh::router {

ExpertLoadTracker::ExpertLoadTracker(const checkpoint::ModelConfig& config,
                                     ExpertLoadOptions options)
    : options_(options), experts_(config.n_routed_experts), moe_layers_(config.MoeLayers()) {
  for (size_t i = 0; i < moe_layers_.size(); ++i) layer_index_[moe_layers_[i]] = static_cast<int>(i);
  totals_.assign(moe_layers_.size() * experts_, 0);
}

void ExpertLoadTracker::SampleLocked(absl::Time now, bool force) {
  // A sample holds the totals just before `time`: every later count is newer than it.
  if (force || samples_.empty() || now - samples_.back().time >= options_.sample_interval) {
    samples_.push_back(Sample{now, totals_});
  }
  while (!samples_.empty() && samples_.front().time <= now - options_.window) samples_.pop_front();
}

void ExpertLoadTracker::OnHeartbeat(const moemesh::v1::HeartbeatRequest& heartbeat,
                                    absl::Time now) {
  if (heartbeat.expert_load_size() == 0) return;
  absl::MutexLock lock(&mutex_);
  SampleLocked(now, /*force=*/false);  // before the new counts
  std::vector<uint64_t>& last = last_seen_[heartbeat.node_id()];
  if (last.empty()) last.assign(totals_.size(), 0);
  for (const moemesh::v1::LayerExpertLoad& load : heartbeat.expert_load()) {
    auto it = layer_index_.find(static_cast<int>(load.layer()));
    if (it == layer_index_.end()) continue;
    const size_t base = static_cast<size_t>(it->second) * experts_;
    const int count = std::min<int>(experts_, load.tokens_size());
    for (int expert = 0; expert < count; ++expert) {
      const uint64_t now_count = load.tokens(expert);
      uint64_t& seen = last[base + expert];
      const uint64_t delta = now_count >= seen ? now_count - seen : now_count;  // restart
      seen = now_count;
      totals_[base + expert] += delta;
    }
  }
}

std::vector<LayerLoad> ExpertLoadTracker::Layers(absl::Time now) {
  absl::MutexLock lock(&mutex_);
  SampleLocked(now, /*force=*/false);
  // Baseline: the totals at the window's start, i.e. just before the oldest sample inside it
  // (older samples are dropped); samples are at least sample_interval apart, so the window is
  // that precise.
  const std::vector<uint64_t>& baseline = samples_.empty() ? totals_ : samples_.front().totals;
  std::vector<LayerLoad> layers;
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    LayerLoad load;
    load.layer = moe_layers_[i];
    for (int expert = 0; expert < experts_; ++expert) {
      const size_t index = i * experts_ + expert;
      load.total.push_back(totals_[index]);
      load.recent.push_back(totals_[index] - std::min(totals_[index], baseline[index]));
    }
    layers.push_back(std::move(load));
  }
  return layers;
}

std::vector<std::vector<double>> ExpertLoadTracker::RecentLoad(absl::Time now) {
  std::vector<std::vector<double>> load;
  for (const LayerLoad& layer : Layers(now)) {
    load.emplace_back(layer.recent.begin(), layer.recent.end());
  }
  return load;
}

std::vector<NodeLayerLoad> ExpertLoadTracker::NodeLoads(const std::vector<LayerLoad>& layers,
                                                        const moemesh::v1::Placement& placement) {
  std::vector<NodeLayerLoad> nodes;
  std::map<std::string, size_t> index;
  for (const moemesh::v1::ExpertNode& node : placement.nodes()) {
    index[node.node_id()] = nodes.size();
    NodeLayerLoad load;
    load.node_id = node.node_id();
    load.healthy = node.healthy();
    load.total_rows.assign(layers.size(), 0);
    load.recent_rows.assign(layers.size(), 0);
    nodes.push_back(std::move(load));
  }
  std::map<int, size_t> layer_position;
  for (size_t i = 0; i < layers.size(); ++i) layer_position[layers[i].layer] = i;
  for (const moemesh::v1::ExpertReplicas& replicas : placement.experts()) {
    auto layer = layer_position.find(static_cast<int>(replicas.layer()));
    if (layer == layer_position.end() || replicas.node_ids_size() == 0) continue;
    const LayerLoad& load = layers[layer->second];
    if (replicas.expert() >= load.total.size()) continue;
    const double share = 1.0 / replicas.node_ids_size();
    for (const std::string& node_id : replicas.node_ids()) {
      auto node = index.find(node_id);
      if (node == index.end()) continue;
      nodes[node->second].total_rows[layer->second] += share * load.total[replicas.expert()];
      nodes[node->second].recent_rows[layer->second] += share * load.recent[replicas.expert()];
    }
  }
  return nodes;
}

double ExpertLoadTracker::Balancedness(const std::vector<double>& rows) {
  if (rows.empty()) return 1.0;
  double sum = 0, max = 0;
  for (double value : rows) {
    sum += value;
    max = std::max(max, value);
  }
  if (max <= 0) return 1.0;
  return sum / static_cast<double>(rows.size()) / max;
}

nlohmann::json ExpertLoadTracker::LoadJson(const moemesh::v1::Placement& placement,
                                           absl::Time now) {
  using nlohmann::json;
  const std::vector<LayerLoad> layers = Layers(now);
  const std::vector<NodeLayerLoad> nodes = NodeLoads(layers, placement);
  json body;
  body["window_seconds"] = absl::ToDoubleSeconds(options_.window);
  body["layers"] = json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    std::vector<double> recent_rows;
    for (const NodeLayerLoad& node : nodes) recent_rows.push_back(node.recent_rows[i]);
    body["layers"].push_back({{"layer", layers[i].layer},
                              {"total", layers[i].total},
                              {"recent", layers[i].recent},
                              {"balancedness", Balancedness(recent_rows)}});
  }
  body["nodes"] = json::array();
  for (const NodeLayerLoad& node : nodes) {
    body["nodes"].push_back({{"node", node.node_id},
                             {"healthy", node.healthy},
                             {"total_rows", node.total_rows},
                             {"recent_rows", node.recent_rows}});
  }
  json experts = json::array();
  for (const moemesh::v1::ExpertReplicas& replicas : placement.experts()) {
    experts.push_back({{"layer", replicas.layer()},
                       {"expert", replicas.expert()},
                       {"nodes", std::vector<std::string>(replicas.node_ids().begin(),
                                                          replicas.node_ids().end())}});
  }
  body["placement"] = {{"version", placement.version()}, {"experts", std::move(experts)}};
  return body;
}

}  // namespace moemesh::router
