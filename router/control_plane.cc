#include "router/control_plane.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "core/obs/log.h"

namespace moemesh::router {

using moemesh::v1::NodeKind;

ControlPlane::ControlPlane(const checkpoint::ModelConfig& config, ControlPlaneOptions options)
    : config_(config), options_(std::move(options)) {}

ControlPlane::Node* ControlPlane::FindLocked(const std::string& id) {
  for (Node& node : nodes_) {
    if (node.id == id) return &node;
  }
  return nullptr;
}

void ControlPlane::PublishLocked(uint64_t version) {
  placement_.set_version(version);
  placement_.clear_nodes();
  published_health_.clear();
  for (const Node& node : nodes_) {
    if (!node.in_placement) continue;
    moemesh::v1::ExpertNode* out = placement_.add_nodes();
    out->set_node_id(node.id);
    out->set_address(node.address);
    out->set_healthy(Serving(node));
    published_health_.push_back(Serving(node));
  }
  counters_.placement_versions = version;
  obs::LogInfo("placement version {} published: {} expert nodes, {} serving", version,
               placement_.nodes_size(),
               std::count(published_health_.begin(), published_health_.end(), true));
}

void ControlPlane::RefreshLocked(absl::Time now) {
  for (Node& node : nodes_) {
    const bool alive = now - node.last_heartbeat <= options_.heartbeat_timeout;
    if (node.alive && !alive) {
      obs::LogWarn("node {} lost: no heartbeat for {} (address={})", node.id,
                   absl::FormatDuration(now - node.last_heartbeat), node.address);
    } else if (!node.alive && alive) {
      obs::LogInfo("node {} heartbeating again (address={})", node.id, node.address);
    }
    node.alive = alive;
  }
  if (placement_.version() == 0) return;
  std::vector<bool> health;
  for (const Node& node : nodes_) {
    if (node.in_placement) health.push_back(Serving(node));
  }
  if (health != published_health_) PublishLocked(placement_.version() + 1);
}

void ControlPlane::MaybeComputePlacementLocked() {
  if (placement_.version() != 0) return;
  std::vector<Node*> experts;
  for (Node& node : nodes_) {
    if (node.kind == moemesh::v1::NODE_KIND_EXPERT) experts.push_back(&node);
  }
  const int count = options_.expected_expert_nodes;
  if (count <= 0 || static_cast<int>(experts.size()) < count) return;
  for (int i = 0; i < count; ++i) {
    experts[i]->in_placement = true;
    experts[i]->assigned_version = 1;
  }
  for (int layer : config_.MoeLayers()) {
    for (int expert = 0; expert < config_.n_routed_experts; ++expert) {
      moemesh::v1::ExpertReplicas* replicas = placement_.add_experts();
      replicas->set_layer(layer);
      replicas->set_expert(expert);
      replicas->add_node_ids(experts[expert % count]->id);
    }
  }
  PublishLocked(1);
}

grpc::Status ControlPlane::Register(grpc::ServerContext* context, const moemesh::v1::RegisterRequest* request,
                                    moemesh::v1::RegisterReply* reply) {
  const NodeKind kind = request->kind();
  if (kind != moemesh::v1::NODE_KIND_EXPERT && kind != moemesh::v1::NODE_KIND_ATTENTION) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "register: node kind unspecified");
  }
  if (request->address().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "register: address is empty");
  }
  const bool expert = kind == moemesh::v1::NODE_KIND_EXPERT;
  absl::MutexLock lock(&mutex_);
  const absl::Time now = absl::Now();
  RefreshLocked(now);
  ++counters_.registrations;
  Node* node = request->preferred_id().empty() ? nullptr : FindLocked(request->preferred_id());
  if (node != nullptr && node->kind != kind) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("register: node id ", request->preferred_id(),
                                     " is already used by a node of another kind"));
  }
  if (node == nullptr) {
    std::string id = request->preferred_id();
    while (id.empty() || FindLocked(id) != nullptr) {
      id = expert ? absl::StrCat("expert-", next_expert_index_++)
                  : absl::StrCat("attention-", next_attention_index_++);
    }
    nodes_.push_back(Node{});
    node = &nodes_.back();
    node->id = id;
    node->kind = kind;
  }
  // New or restarted: whatever it held before is gone.
  obs::LogInfo("node {} {}: kind={} address={} peer={}", node->id,
               node->address.empty() ? "registered" : "rejoined (restarted)",
               expert ? "expert" : "attention", request->address(),
               context != nullptr ? context->peer() : std::string("in-process"));
  node->address = request->address();
  node->metrics_address = request->metrics_address();
  node->last_heartbeat = now;
  node->alive = true;
  node->loaded_version = 0;
  node->cache_capacity_tokens = request->cache_capacity_tokens();
  node->cache_free_tokens = request->cache_capacity_tokens();
  node->running_sequences = 0;
  node->waiting_sequences = 0;
  const std::string id = node->id;
  if (expert) {
    if (node->in_placement) {
      node->assigned_version = placement_.version() + 1;  // its experts again, new version
      PublishLocked(placement_.version() + 1);
    } else {
      MaybeComputePlacementLocked();
    }
  }
  reply->set_node_id(id);
  reply->set_heartbeat_interval_seconds(options_.heartbeat_interval_seconds);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Heartbeat(grpc::ServerContext*,
                                     const moemesh::v1::HeartbeatRequest* request,
                                     moemesh::v1::HeartbeatReply* reply) {
  if (options_.on_heartbeat) options_.on_heartbeat(*request);
  absl::MutexLock lock(&mutex_);
  const absl::Time now = absl::Now();
  ++counters_.heartbeats;
  Node* node = FindLocked(request->node_id());
  if (node == nullptr) {
    ++counters_.unknown_heartbeats;
    RefreshLocked(now);
    reply->set_known(false);
    reply->set_placement_version(placement_.version());
    return grpc::Status::OK;
  }
  node->last_heartbeat = now;
  if (node->kind == moemesh::v1::NODE_KIND_EXPERT) {
    // A version from the future (a previous router's) is not a loaded placement of ours.
    const uint64_t loaded = request->loaded_placement_version();
    node->loaded_version = loaded <= placement_.version() ? loaded : 0;
  } else {
    node->cache_free_tokens = request->cache_free_tokens();
    node->cache_capacity_tokens = request->cache_capacity_tokens();
    node->running_sequences = request->running_sequences();
    node->waiting_sequences = request->waiting_sequences();
  }
  RefreshLocked(now);
  reply->set_known(true);
  reply->set_placement_version(placement_.version());
  return grpc::Status::OK;
}

grpc::Status ControlPlane::GetPlacement(grpc::ServerContext*,
                                        const moemesh::v1::GetPlacementRequest*,
                                        moemesh::v1::Placement* reply) {
  *reply = CurrentPlacement();
  return grpc::Status::OK;
}

moemesh::v1::Placement ControlPlane::CurrentPlacement() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  return placement_;
}

std::optional<std::pair<int, int>> ControlPlane::FirstUnservedLocked(bool require_current) {
  if (placement_.version() == 0) {
    for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
      if (config_.IsMoeLayer(layer)) return std::make_pair(layer, 0);
    }
    return std::nullopt;
  }
  std::map<std::string, const Node*> by_id;
  for (const Node& node : nodes_) by_id[node.id] = &node;
  for (const moemesh::v1::ExpertReplicas& replicas : placement_.experts()) {
    bool served = false;
    for (const std::string& id : replicas.node_ids()) {
      auto it = by_id.find(id);
      if (it == by_id.end() || !Serving(*it->second)) continue;
      if (require_current && it->second->loaded_version != placement_.version()) continue;
      served = true;
      break;
    }
    if (!served) return std::make_pair(static_cast<int>(replicas.layer()),
                                       static_cast<int>(replicas.expert()));
  }
  return std::nullopt;
}

std::optional<std::pair<int, int>> ControlPlane::FirstUnservedExpert() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  return FirstUnservedLocked(/*require_current=*/false);
}

bool ControlPlane::Ready(std::string* why) {
  absl::MutexLock lock(&mutex_);
  const absl::Time now = absl::Now();
  RefreshLocked(now);
  std::vector<std::string> reasons;
  if (placement_.version() == 0) {
    int experts = 0;
    for (const Node& node : nodes_) experts += node.kind == moemesh::v1::NODE_KIND_EXPERT;
    reasons.push_back(absl::StrCat("no placement yet: ", experts, " of ",
                                   options_.expected_expert_nodes, " expert nodes registered"));
  } else if (auto unserved = FirstUnservedLocked(/*require_current=*/true)) {
    std::vector<std::string> holders;
    for (const auto& replicas : placement_.experts()) {
      if (static_cast<int>(replicas.layer()) != unserved->first ||
          static_cast<int>(replicas.expert()) != unserved->second) {
        continue;
      }
      for (const std::string& id : replicas.node_ids()) {
        const Node* node = FindLocked(id);
        if (node == nullptr) continue;
        if (!node->alive) {
          holders.push_back(absl::StrCat(id, " (no heartbeat for ",
                                         absl::FormatDuration(absl::Trunc(
                                             now - node->last_heartbeat, absl::Milliseconds(1))),
                                         ")"));
        } else {
          holders.push_back(absl::StrCat(id, " (loaded placement version ", node->loaded_version,
                                         ")"));
        }
      }
    }
    reasons.push_back(absl::StrCat("layer ", unserved->first, " expert ", unserved->second,
                                   " has no healthy replica that loaded placement version ",
                                   placement_.version(), "; holders: ",
                                   holders.empty() ? "none" : absl::StrJoin(holders, ", ")));
  }
  int attention_healthy = 0;
  int attention_registered = 0;
  for (const Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_ATTENTION) continue;
    ++attention_registered;
    attention_healthy += node.alive;
  }
  if (attention_healthy < options_.expected_attention_nodes) {
    reasons.push_back(absl::StrCat("attention nodes: ", attention_healthy, " healthy of ",
                                   options_.expected_attention_nodes, " expected (",
                                   attention_registered, " registered)"));
  }
  if (why != nullptr) *why = absl::StrJoin(reasons, "; ");
  return reasons.empty();
}

std::optional<AttentionNodeInfo> ControlPlane::PickAttentionNode(uint64_t reserve_tokens) {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  Node* best = nullptr;
  for (Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_ATTENTION || !node.alive) continue;
    if (best == nullptr || node.cache_free_tokens > best->cache_free_tokens) best = &node;
  }
  if (best == nullptr) return std::nullopt;
  AttentionNodeInfo info{best->id,
                         best->address,
                         best->metrics_address,
                         true,
                         best->cache_free_tokens,
                         best->cache_capacity_tokens,
                         best->running_sequences,
                         best->waiting_sequences};
  best->cache_free_tokens -= std::min(best->cache_free_tokens, reserve_tokens);
  return info;
}

std::vector<AttentionNodeInfo> ControlPlane::AttentionNodes() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  std::vector<AttentionNodeInfo> result;
  for (const Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_ATTENTION) continue;
    result.push_back(AttentionNodeInfo{node.id, node.address, node.metrics_address, node.alive,
                                       node.cache_free_tokens, node.cache_capacity_tokens,
                                       node.running_sequences, node.waiting_sequences});
  }
  return result;
}

ControlPlaneCounters ControlPlane::counters() {
  absl::MutexLock lock(&mutex_);
  return counters_;
}

std::vector<MetricsTarget> ControlPlane::MetricsTargets() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  std::vector<MetricsTarget> targets;
  for (const Node& node : nodes_) {
    if (node.metrics_address.empty()) continue;
    targets.push_back({node.id, node.kind == moemesh::v1::NODE_KIND_EXPERT ? "expert" : "attention",
                       node.metrics_address, node.alive});
  }
  return targets;
}

}  // namespace moemesh::router
