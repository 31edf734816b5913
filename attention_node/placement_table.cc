#include "attention_node/placement_table.h"

#include "core/obs/log.h"

namespace moemesh::attention_node {

const std::string* PlacementSnapshot::ChooseReplica(
    int layer, int expert, uint64_t spread, const std::set<std::string>* also_unhealthy) const {
  auto it = replicas.find({layer, expert});
  if (it == replicas.end()) return nullptr;
  std::vector<const std::string*> healthy;
  for (const std::string& node : it->second) {
    if (unhealthy.count(node) > 0 || addresses.count(node) == 0) continue;
    if (also_unhealthy != nullptr && also_unhealthy->count(node) > 0) continue;
    healthy.push_back(&node);
  }
  if (healthy.empty()) return nullptr;
  return healthy[(spread + static_cast<uint64_t>(expert)) % healthy.size()];
}

void PlacementTable::Update(const moemesh::v1::Placement& placement) {
  if (placement.target()) return;
  auto snapshot = std::make_shared<PlacementSnapshot>();
  snapshot->version = placement.version();
  for (const auto& node : placement.nodes()) {
    snapshot->addresses[node.node_id()] = node.address();
    if (!node.healthy()) snapshot->unhealthy.insert(node.node_id());
  }
  for (const auto& entry : placement.experts()) {
    auto& nodes = snapshot->replicas[{static_cast<int>(entry.layer()), static_cast<int>(entry.expert())}];
    nodes.assign(entry.node_ids().begin(), entry.node_ids().end());
  }
  uint64_t previous;
  {
    absl::MutexLock lock(&mutex_);
    previous = snapshot_->version;
    if (snapshot->version < previous) return;
    if (snapshot->version == previous) {
      // Same version: keep local suspicions.
      for (const std::string& node : snapshot_->suspected) {
        if (snapshot->unhealthy.insert(node).second) snapshot->suspected.insert(node);
      }
    }
    snapshot_ = snapshot;
  }
  if (snapshot->version != previous) {
    obs::LogInfo("placement version {} installed placement_version={} previous_version={} "
                 "expert_nodes={} unhealthy={}",
                 snapshot->version, snapshot->version, previous, snapshot->addresses.size(),
                 snapshot->unhealthy.size());
  }
}

void PlacementTable::Suspect(const std::string& node_id) {
  uint64_t version;
  bool newly = false;
  {
    absl::MutexLock lock(&mutex_);
    auto snapshot = std::make_shared<PlacementSnapshot>(*snapshot_);
    if (snapshot->unhealthy.insert(node_id).second) {
      snapshot->suspected.insert(node_id);
      newly = true;
    }
    version = snapshot->version;
    snapshot_ = std::move(snapshot);
  }
  if (newly) {
    obs::LogWarn("expert node suspected lost (dispatch failed), routing around it node={} "
                 "placement_version={}",
                 node_id, version);
  }
}

bool PlacementTable::Forgive() {
  absl::MutexLock lock(&mutex_);
  if (snapshot_->suspected.empty()) return false;
  auto snapshot = std::make_shared<PlacementSnapshot>(*snapshot_);
  for (const std::string& node : snapshot->suspected) snapshot->unhealthy.erase(node);
  snapshot->suspected.clear();
  snapshot_ = std::move(snapshot);
  return true;
}

std::shared_ptr<const PlacementSnapshot> PlacementTable::Snapshot() const {
  absl::MutexLock lock(&mutex_);
  return snapshot_;
}

std::shared_ptr<const PlacementSnapshot> PlacementTable::Pin() {
  absl::MutexLock lock(&mutex_);
  pinned_.insert(snapshot_->version);
  return snapshot_;
}

void PlacementTable::Unpin(uint64_t version) {
  absl::MutexLock lock(&mutex_);
  auto it = pinned_.find(version);
  if (it != pinned_.end()) pinned_.erase(it);
}

uint64_t PlacementTable::UsedVersion() const {
  absl::MutexLock lock(&mutex_);
  return pinned_.empty() ? snapshot_->version : *pinned_.begin();
}

}  // namespace moemesh::attention_node
