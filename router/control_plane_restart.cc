// The control plane after a router restart: the placement rebuilt from what the re-registering
// expert nodes report holding (see ControlPlane::Register in control_plane.h).
#include <algorithm>
#include <map>
#include <set>

#include "core/obs/log.h"
#include "router/control_plane.h"

namespace moemesh::router {

void ControlPlane::MaybeFirstPlacementLocked(absl::Time now) {
  if (placement_.version() != 0) return;
  if (!first_report_.has_value()) {
    MaybeComputePlacementLocked();
    return;
  }
  int registered = 0;
  for (const Node& node : nodes_) {
    registered += node.kind == moemesh::v1::NODE_KIND_EXPERT && node.alive;
  }
  const bool waited = now - *first_report_ > options_.heartbeat_timeout;
  if (registered < options_.expected_expert_nodes && !waited) return;  // more may come back
  if (MaybeAdoptReportedLocked(now)) return;
  if (waited) {
    obs::LogWarn("the expert nodes that registered again do not hold every expert between them: "
                 "planning a first placement (experts will be loaded)");
    MaybeComputePlacementLocked();
  }
}

bool ControlPlane::MaybeAdoptReportedLocked(absl::Time now) {
  if (placement_.version() != 0) return false;
  std::map<std::pair<int, int>, std::vector<std::string>> holders;
  std::vector<Node*> reporting;
  for (Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_EXPERT || !node.alive) continue;
    if (node.reported_held.empty()) continue;
    reporting.push_back(&node);
    for (const auto& key : node.reported_held) holders[key].push_back(node.id);
  }
  if (reporting.empty()) return false;
  std::vector<moemesh::v1::ExpertReplicas> entries;
  for (int layer : config_.MoeLayers()) {
    for (int expert = 0; expert < config_.n_routed_experts; ++expert) {
      auto it = holders.find({layer, expert});
      if (it == holders.end()) return false;  // not covered (yet): wait for more nodes
      moemesh::v1::ExpertReplicas replicas;
      replicas.set_layer(layer);
      replicas.set_expert(expert);
      for (const std::string& id : it->second) replicas.add_node_ids(id);
      entries.push_back(std::move(replicas));
    }
  }
  for (const auto& entry : entries) counters_.adopted_replicas += entry.node_ids_size();
  const uint64_t version = NextVersionLocked();
  for (Node* node : reporting) {
    node->in_placement = true;
    node->assigned_version = node->loaded_version > 0 ? node->loaded_version : version;
  }
  placement_.mutable_experts()->Assign(entries.begin(), entries.end());
  ++counters_.placements_adopted;
  obs::LogInfo("placement version {} adopted from what {} expert nodes hold (router restart): "
               "no expert loaded again",
               version, reporting.size());
  PublishLocked(version);
  last_plan_ = now;
  adopted_at_ = now;
  return true;
}

void ControlPlane::MergeReportedLocked(Node& node) {
  std::set<std::pair<int, int>> held(node.reported_held.begin(), node.reported_held.end());
  uint64_t added = 0;
  for (moemesh::v1::ExpertReplicas& entry : *placement_.mutable_experts()) {
    if (held.count({static_cast<int>(entry.layer()), static_cast<int>(entry.expert())}) == 0) {
      continue;
    }
    if (std::find(entry.node_ids().begin(), entry.node_ids().end(), node.id) !=
        entry.node_ids().end()) {
      continue;
    }
    entry.add_node_ids(node.id);
    ++added;
  }
  if (added == 0) return;
  const uint64_t version = NextVersionLocked();
  node.in_placement = true;
  node.assigned_version = node.loaded_version > 0 ? node.loaded_version : version;
  counters_.adopted_replicas += added;
  obs::LogInfo("expert node {} holds {} experts from before the router restart: replicas of them "
               "from placement version {}",
               node.id, added, version);
  PublishLocked(version);
}

void ControlPlane::CheckAdoptedRedundancyLocked(absl::Time now) {
  if (!adopted_at_.has_value() || now - *adopted_at_ <= options_.heartbeat_timeout) return;
  // Nodes that held experts before the restart and have not registered again by now are
  // gone: restore min_replicas (as far as the live nodes allow) from the adopted placement.
  adopted_at_.reset();
  int live = 0;
  for (const Node& node : nodes_) {
    live += node.kind == moemesh::v1::NODE_KIND_EXPERT && node.alive && !node.draining;
  }
  const size_t wanted = static_cast<size_t>(std::clamp(options_.min_replicas, 1, std::max(live, 1)));
  for (const auto& entry : placement_.experts()) {
    size_t alive = 0;
    for (const std::string& id : entry.node_ids()) {
      const Node* node = FindLocked(id);
      alive += node != nullptr && node->alive;
    }
    if (alive < wanted) {
      plan_reasons_.insert("adopt");
      wake_ = true;
      break;
    }
  }
}

}  // namespace moemesh::router
