#include "router/control_plane.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "core/obs/log.h"
#include "core/placement/planner.h"
#include "router/placement_plan.h"

namespace moemesh::router {

using moemesh::v1::HeartbeatReply;
using moemesh::v1::NodeKind;

ControlPlane::ControlPlane(const checkpoint::ModelConfig& config, ControlPlaneOptions options)
    : config_(config), options_(std::move(options)) {
  last_plan_ = absl::Now();
  thread_ = std::thread([this] { Loop(); });
}

ControlPlane::~ControlPlane() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

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
  obs::LogInfo("placement version {} published placement_version={} expert_nodes={} serving={}",
               version, version, placement_.nodes_size(),
               std::count(published_health_.begin(), published_health_.end(), true));
  if (target_.has_value() && target_->placement.version() < version) {
    AbandonTargetLocked("the committed placement changed (node health or restart)");
  }
}

void ControlPlane::AbandonTargetLocked(const std::string& why) {
  if (!target_.has_value()) return;
  obs::LogWarn("placement target abandoned target_version={} reason=\"{}\"",
               target_->placement.version(), why);
  ++counters_.targets_abandoned;
  plan_reasons_.insert(target_->reasons.begin(), target_->reasons.end());
  plan_waiters_.insert(plan_waiters_.end(), target_->waiters.begin(), target_->waiters.end());
  target_.reset();
  counters_.target_version = 0;
  wake_ = true;
}

void ControlPlane::RefreshLocked(absl::Time now) {
  for (Node& node : nodes_) {
    const bool was_alive = node.alive;
    node.alive = now - node.last_heartbeat <= options_.heartbeat_timeout;
    const char* kind = node.kind == moemesh::v1::NODE_KIND_EXPERT ? "expert" : "attention";
    if (was_alive && !node.alive &&
        (node.drain == HeartbeatReply::DRAINED || node.attention_draining)) {
      obs::LogInfo("node left after its drain node={} kind={} address={}", node.id, kind,
                   node.address);
    } else if (was_alive && !node.alive) {
      obs::LogWarn("node lost node={} kind={} address={} silent_for={}", node.id, kind,
                   node.address, absl::FormatDuration(now - node.last_heartbeat));
    } else if (!was_alive && node.alive) {
      obs::LogInfo("node heartbeating again node={} kind={} address={}", node.id, kind,
                   node.address);
    }
    // A death is a membership change: re-plan without the node (its experts go to the others).
    if (was_alive && !node.alive && node.kind == moemesh::v1::NODE_KIND_EXPERT &&
        node.in_placement && node.drain != HeartbeatReply::DRAINED) {
      ++counters_.expert_nodes_lost;
      if (!lost_since_.has_value()) lost_since_ = now;
      plan_reasons_.insert("node_lost");
      wake_ = true;
      obs::LogWarn("expert node lost, re-planning without it node={} placement_version={}",
                   node.id, placement_.version());
    }
  }
  // A drained node that stopped heartbeating has left.
  nodes_.erase(std::remove_if(nodes_.begin(), nodes_.end(),
                              [](const Node& node) {
                                return !node.alive && node.drain == HeartbeatReply::DRAINED &&
                                       !node.in_placement;
                              }),
               nodes_.end());
  if (placement_.version() == 0) return;
  std::vector<bool> health;
  for (const Node& node : nodes_) {
    if (node.in_placement) health.push_back(Serving(node));
  }
  if (health != published_health_) PublishLocked(NextVersionLocked());
}

void ControlPlane::MaybeComputePlacementLocked() {
  if (placement_.version() != 0) return;
  std::vector<Node*> experts;
  for (Node& node : nodes_) {
    if (node.kind == moemesh::v1::NODE_KIND_EXPERT) experts.push_back(&node);
  }
  const int count = options_.expected_expert_nodes;
  if (count <= 0 || static_cast<int>(experts.size()) < count) return;
  experts.resize(count);
  bool capacities = false;
  for (const Node* node : experts) capacities |= node->max_experts_per_layer > 0;
  const std::vector<int> moe_layers = config_.MoeLayers();
  std::vector<moemesh::v1::ExpertReplicas> entries;
  if (options_.redundant_experts > 0 || capacities || options_.min_replicas > 1) {
    placement::PlannerInput input;
    input.num_experts = config_.n_routed_experts;
    input.load.assign(moe_layers.size(), std::vector<double>(config_.n_routed_experts, 1.0));
    std::vector<std::string> ids;
    for (const Node* node : experts) {
      input.nodes.push_back({node->id, node->max_experts_per_layer});
      ids.push_back(node->id);
    }
    input.redundant_experts = options_.redundant_experts;
    input.min_replicas = std::clamp(options_.min_replicas, 1, static_cast<int>(input.nodes.size()));
    absl::StatusOr<placement::PlacementPlan> plan = placement::PlanPlacement(input);
    if (!plan.ok()) {
      obs::LogError("no first placement error=\"{}\"", std::string(plan.status().message()));
      return;
    }
    entries = PlanEntries(*plan, ids, moe_layers);
  } else {
    for (int layer : moe_layers) {
      for (int expert = 0; expert < config_.n_routed_experts; ++expert) {
        moemesh::v1::ExpertReplicas replicas;
        replicas.set_layer(layer);
        replicas.set_expert(expert);
        replicas.add_node_ids(experts[expert % count]->id);
        entries.push_back(std::move(replicas));
      }
    }
  }
  const uint64_t version = NextVersionLocked();
  std::set<std::string> used;
  for (const auto& entry : entries) used.insert(entry.node_ids().begin(), entry.node_ids().end());
  for (Node* node : experts) {
    node->in_placement = used.count(node->id) > 0;
    node->assigned_version = version;
  }
  placement_.mutable_experts()->Assign(entries.begin(), entries.end());
  PublishLocked(version);
  last_plan_ = absl::Now();
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
  bool joined = false;
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
    joined = expert;
  }
  // New or restarted: whatever it held before is gone.
  obs::LogInfo("node {} node={} kind={} address={} peer={}",
               node->address.empty() ? "registered" : "rejoined (restarted)", node->id,
               expert ? "expert" : "attention", request->address(),
               context != nullptr ? context->peer() : std::string("in-process"));
  node->address = request->address();
  node->metrics_address = request->metrics_address();
  node->last_heartbeat = now;
  node->alive = true;
  node->loaded_version = 0;
  node->held_experts = 0;
  node->max_experts_per_layer = static_cast<int>(request->max_experts_per_layer());
  node->draining = false;
  node->drain = HeartbeatReply::DRAIN_NONE;
  node->drain_message.clear();
  node->cache_capacity_tokens = request->cache_capacity_tokens();
  node->cache_free_tokens = request->cache_capacity_tokens();
  node->running_sequences = 0;
  node->waiting_sequences = 0;
  node->used_version = 0;
  node->attention_draining = false;
  const std::string id = node->id;
  // What a previous router gave it (router restart): our versions go above its, and its experts
  // are adopted rather than loaded again.
  node->reported_held.clear();
  for (const moemesh::v1::HeldExperts& layer : request->held_experts()) {
    const int index = static_cast<int>(layer.layer());
    if (!expert || index >= config_.num_hidden_layers || !config_.IsMoeLayer(index)) continue;
    for (uint32_t e : layer.experts()) {
      if (e < static_cast<uint32_t>(config_.n_routed_experts)) {
        node->reported_held.emplace_back(index, static_cast<int>(e));
      }
    }
  }
  std::sort(node->reported_held.begin(), node->reported_held.end());
  node->reported_held.erase(std::unique(node->reported_held.begin(), node->reported_held.end()),
                            node->reported_held.end());
  const uint64_t reported_version = request->placement_version();
  if (reported_version > last_version_) last_version_ = reported_version;
  // It serves what it holds as of the version it reports (see Serving()): adopted replicas are
  // healthy at once, without waiting for the node to fetch the adopted placement.
  if (expert && !node->reported_held.empty()) node->loaded_version = reported_version;
  if (reported_version > 0 && placement_.version() > 0 &&
      reported_version >= placement_.version()) {
    // It would take our placement for an old one: publish it again under a newer version.
    PublishLocked(NextVersionLocked());
  }
  if (expert) {
    if (node->in_placement) {
      const uint64_t version = NextVersionLocked();
      node->assigned_version = version;  // its experts again, new version
      PublishLocked(version);
    } else if (placement_.version() == 0) {
      if (!node->reported_held.empty() && !first_report_.has_value()) first_report_ = now;
      MaybeFirstPlacementLocked(now);
    } else if (!node->reported_held.empty()) {
      MergeReportedLocked(*node);
      if (!node->in_placement) {
        plan_reasons_.insert(joined ? "join" : "rejoin");
        wake_ = true;
      }
    } else if (!node->in_placement) {
      // A node joining a serving cluster gets experts at the next re-plan.
      plan_reasons_.insert(joined ? "join" : "rejoin");
      wake_ = true;
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
    const uint64_t before = node->loaded_version;
    node->loaded_version = loaded <= last_version_ ? loaded : 0;
    node->held_experts = request->held_experts();
    if (request->draining() && !node->draining) {
      node->draining = true;
      node->drain = HeartbeatReply::DRAIN_IN_PROGRESS;
      node->drain_message = "re-planning without this node";
      obs::LogInfo("drain started node={} kind=expert placement_version={}", node->id,
                   placement_.version());
      plan_reasons_.insert("drain");
    }
    if (node->loaded_version != before) wake_ = true;
  } else {
    node->cache_free_tokens = request->cache_free_tokens();
    node->cache_capacity_tokens = request->cache_capacity_tokens();
    node->running_sequences = request->running_sequences();
    node->waiting_sequences = request->waiting_sequences();
    if (request->used_placement_version() != node->used_version) wake_ = true;
    node->used_version = request->used_placement_version();
    if (request->draining() && !node->attention_draining) {
      obs::LogInfo("drain started node={} kind=attention running={} waiting={}", node->id,
                   node->running_sequences, node->waiting_sequences);
    }
    node->attention_draining = request->draining();
  }
  RefreshLocked(now);
  node = FindLocked(request->node_id());
  reply->set_known(true);
  reply->set_placement_version(placement_.version());
  if (node != nullptr && node->kind == moemesh::v1::NODE_KIND_EXPERT) {
    UpdateDrainsLocked();
    reply->set_target_placement_version(target_.has_value() ? target_->placement.version() : 0);
    reply->set_min_used_placement_version(MinUsedVersionLocked());
    reply->set_drain(node->drain);
    reply->set_drain_message(node->drain_message);
  }
  return grpc::Status::OK;
}

grpc::Status ControlPlane::GetPlacement(grpc::ServerContext*,
                                        const moemesh::v1::GetPlacementRequest* request,
                                        moemesh::v1::Placement* reply) {
  if (request->target()) {
    if (std::optional<moemesh::v1::Placement> target = TargetPlacement()) {
      *reply = *std::move(target);
      return grpc::Status::OK;
    }
  }
  *reply = CurrentPlacement();
  return grpc::Status::OK;
}

moemesh::v1::Placement ControlPlane::CurrentPlacement() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  return placement_;
}

std::optional<moemesh::v1::Placement> ControlPlane::TargetPlacement() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  if (!target_.has_value()) return std::nullopt;
  return target_->placement;
}

uint64_t ControlPlane::MinUsedVersionLocked() const {
  uint64_t min_used = placement_.version();
  for (const Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_ATTENTION || !node.alive) continue;
    min_used = std::min(min_used, node.used_version);
  }
  return min_used;
}

void ControlPlane::UpdateDrainsLocked() {
  const uint64_t min_used = MinUsedVersionLocked();
  for (Node& node : nodes_) {
    if (!node.draining || node.drain == HeartbeatReply::DRAINED) continue;
    if (!node.in_placement && node.removed_version <= min_used) {
      node.drain = HeartbeatReply::DRAINED;
      node.drain_message = absl::StrCat("placement version ", placement_.version(),
                                        " holds nothing here and no attention node uses an "
                                        "older one");
      ++counters_.drains_completed;
      obs::LogInfo("drain finished node={} kind=expert placement_version={} detail=\"{}\"",
                   node.id, placement_.version(), node.drain_message);
    }
  }
}

bool ControlPlane::WantsPlanLocked(absl::Time now) const {
  if (placement_.version() == 0 || target_.has_value()) return false;
  if (!plan_reasons_.empty()) return true;
  return options_.rebalance_interval_seconds > 0 &&
         now - last_plan_ >= absl::Seconds(options_.rebalance_interval_seconds);
}

void ControlPlane::Loop() {
  while (true) {
    bool plan = false;
    {
      absl::MutexLock lock(&mutex_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_ || wake_; };
      mutex_.AwaitWithTimeout(absl::Condition(&woken), options_.reconcile_interval);
      if (stopping_) return;
      wake_ = false;
      plan = WantsPlanLocked(absl::Now());
    }
    std::vector<std::vector<double>> load;
    if (plan && options_.load_window) load = options_.load_window();
    absl::MutexLock lock(&mutex_);
    const absl::Time now = absl::Now();
    RefreshLocked(now);
    ReconcileLocked(now, load);
  }
}

void ControlPlane::ReconcileLocked(absl::Time now, const std::vector<std::vector<double>>& load) {
  if (placement_.version() == 0 && first_report_.has_value()) MaybeFirstPlacementLocked(now);
  if (target_.has_value()) {
    bool loaded = true;
    std::string missing;
    for (const moemesh::v1::ExpertNode& entry : target_->placement.nodes()) {
      const Node* node = FindLocked(entry.node_id());
      if (node == nullptr || !node->alive) {
        AbandonTargetLocked(absl::StrCat("expert node ", entry.node_id(), " is gone"));
        return;
      }
      if (node->loaded_version < target_->placement.version()) {
        loaded = false;
        missing = node->id;
      }
    }
    if (loaded) {
      CommitTargetLocked(now);
    } else if (now - target_->planned > options_.target_timeout) {
      AbandonTargetLocked(absl::StrCat("expert node ", missing, " did not load it within ",
                                       absl::FormatDuration(options_.target_timeout)));
    }
  } else if (WantsPlanLocked(now)) {
    PlanLocked(now, load);
  }
  CheckAdoptedRedundancyLocked(now);
  UpdateDrainsLocked();
}

void ControlPlane::PlanLocked(absl::Time now, const std::vector<std::vector<double>>& load) {
  std::set<std::string> reasons = std::move(plan_reasons_);
  plan_reasons_.clear();
  if (reasons.empty()) reasons.insert("timer");
  std::vector<uint64_t> waiters = std::move(plan_waiters_);
  plan_waiters_.clear();
  last_plan_ = now;
  const std::vector<int> moe_layers = config_.MoeLayers();
  const int experts = config_.n_routed_experts;
  auto answer = [&](const absl::StatusOr<RebalanceResult>& result)
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    for (uint64_t waiter : waiters) results_.emplace(waiter, result);
  };
  placement::PlannerInput input;
  input.num_experts = experts;
  input.load = load;
  if (input.load.size() != moe_layers.size()) {
    input.load.assign(moe_layers.size(), std::vector<double>(experts, 0.0));
  }
  input.redundant_experts = options_.redundant_experts;
  // Start from the committed placement so that a re-plan moves few replicas.
  input.keep_tolerance = options_.replan_keep_tolerance;
  {
    std::map<int, size_t> layer_index;
    for (size_t i = 0; i < moe_layers.size(); ++i) layer_index[moe_layers[i]] = i;
    input.previous.assign(moe_layers.size(), std::vector<std::vector<std::string>>(experts));
    for (const auto& entry : placement_.experts()) {
      auto it = layer_index.find(static_cast<int>(entry.layer()));
      if (it == layer_index.end() || entry.expert() >= static_cast<uint32_t>(experts)) continue;
      input.previous[it->second][entry.expert()].assign(entry.node_ids().begin(),
                                                        entry.node_ids().end());
    }
  }
  // Nodes that may hold experts: alive expert nodes; draining ones only if the others cannot
  // hold every expert (then their drain is refused).
  auto plan_over = [&](bool with_draining, std::vector<std::string>* ids)
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    input.nodes.clear();
    ids->clear();
    for (const Node& node : nodes_) {
      if (node.kind != moemesh::v1::NODE_KIND_EXPERT || !node.alive) continue;
      if (node.drain == HeartbeatReply::DRAINED) continue;
      if (node.draining && !with_draining) continue;
      input.nodes.push_back({node.id, node.max_experts_per_layer});
      ids->push_back(node.id);
    }
    if (input.nodes.empty()) {
      return absl::StatusOr<placement::PlacementPlan>(
          absl::FailedPreconditionError("no expert node could hold the experts"));
    }
    // Failure redundancy as far as the live nodes allow it; one replica each rather than none.
    input.min_replicas =
        std::clamp(options_.min_replicas, 1, static_cast<int>(input.nodes.size()));
    absl::StatusOr<placement::PlacementPlan> plan = placement::PlanPlacement(input);
    if (!plan.ok() && input.min_replicas > 1) {
      obs::LogWarn("no placement with min_replicas={} ({}); planning one replica each",
                   input.min_replicas, std::string(plan.status().message()));
      input.min_replicas = 1;
      plan = placement::PlanPlacement(input);
    }
    return plan;
  };
  std::vector<std::string> ids;
  absl::StatusOr<placement::PlacementPlan> plan = plan_over(false, &ids);
  bool any_draining = false;
  for (const Node& node : nodes_) {
    any_draining |= node.draining && node.drain != HeartbeatReply::DRAINED;
  }
  if (!plan.ok() && any_draining) {
    const std::string why = absl::StrCat("the other expert nodes cannot hold every expert: ",
                                         plan.status().message());
    for (Node& node : nodes_) {
      if (!node.draining || node.drain == HeartbeatReply::DRAINED) continue;
      if (node.drain != HeartbeatReply::DRAIN_REFUSED) {
        ++counters_.drains_refused;
        obs::LogWarn("drain refused node={} kind=expert reason=\"{}\"", node.id, why);
      }
      node.drain = HeartbeatReply::DRAIN_REFUSED;
      node.drain_message = why;
    }
    plan = plan_over(true, &ids);
  } else if (plan.ok()) {
    for (Node& node : nodes_) {
      if (!node.draining || node.drain == HeartbeatReply::DRAINED) continue;
      node.drain = HeartbeatReply::DRAIN_IN_PROGRESS;
      node.drain_message = "re-planned without this node; waiting for the commit";
    }
  }
  if (!plan.ok()) {
    obs::LogWarn("re-plan failed reasons={} error=\"{}\"", absl::StrJoin(reasons, ","),
                 std::string(plan.status().message()));
    answer(absl::FailedPreconditionError(
        absl::StrCat("re-plan failed: ", plan.status().message())));
    return;
  }
  std::vector<moemesh::v1::ExpertReplicas> entries = PlanEntries(*plan, ids, moe_layers);
  const double before = PredictedBalancedness(placement_, input.load, moe_layers, experts);
  moemesh::v1::Placement target;
  target.mutable_experts()->Assign(entries.begin(), entries.end());
  const double after = PredictedBalancedness(target, input.load, moe_layers, experts);
  const bool timer_only = reasons.size() == 1 && *reasons.begin() == "timer";
  if (SameAssignment(placement_, entries) ||
      (timer_only && after - before < options_.rebalance_min_gain)) {
    RebalanceResult result;
    result.version = placement_.version();
    result.reason = absl::StrJoin(reasons, ",");
    result.balancedness_before = before;
    result.balancedness_after = before;
    answer(result);
    return;
  }
  target.set_version(NextVersionLocked());
  target.set_target(true);
  std::set<std::string> used;
  for (const auto& entry : entries) used.insert(entry.node_ids().begin(), entry.node_ids().end());
  for (const Node& node : nodes_) {
    if (used.count(node.id) == 0) continue;
    moemesh::v1::ExpertNode* out = target.add_nodes();
    out->set_node_id(node.id);
    out->set_address(node.address);
    out->set_healthy(node.alive);
  }
  target_ = Target{std::move(target), std::move(reasons), now, before, after, std::move(waiters)};
  counters_.target_version = target_->placement.version();
  obs::LogInfo("placement target planned target_version={} reasons={} expert_nodes={} "
               "balancedness_before={:.3f} balancedness_after={:.3f}",
               target_->placement.version(), absl::StrJoin(target_->reasons, ","), used.size(),
               before, after);
}

void ControlPlane::CommitTargetLocked(absl::Time now) {
  Target target = *std::move(target_);
  target_.reset();
  counters_.target_version = 0;
  const uint64_t version = target.placement.version();
  std::set<std::string> used;
  for (const auto& entry : target.placement.experts()) {
    used.insert(entry.node_ids().begin(), entry.node_ids().end());
  }
  for (Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_EXPERT) continue;
    const bool holds = used.count(node.id) > 0;
    if (node.in_placement && !holds) node.removed_version = version;
    node.in_placement = holds;
    if (holds) node.assigned_version = version;
    if (holds && node.draining && node.drain != HeartbeatReply::DRAIN_REFUSED) {
      node.drain = HeartbeatReply::DRAIN_REFUSED;
      node.drain_message = "the other expert nodes cannot hold every expert";
    }
  }
  *placement_.mutable_experts() = target.placement.experts();
  PublishLocked(version);
  const double seconds = absl::ToDoubleSeconds(now - target.planned);
  RebalanceResult result;
  result.version = version;
  result.changed = true;
  result.reason = absl::StrJoin(target.reasons, ",");
  result.balancedness_before = target.balancedness_before;
  result.balancedness_after = target.balancedness_after;
  result.plan_to_commit_seconds = seconds;
  for (const std::string& reason : target.reasons) ++counters_.rebalances[reason];
  if (target.reasons.count("node_lost") > 0 && lost_since_.has_value()) {
    ++counters_.redundancy_restored;
    counters_.last_restore_seconds = absl::ToDoubleSeconds(now - *lost_since_);
    lost_since_.reset();
  }
  counters_.plan_to_commit_seconds_sum += seconds;
  counters_.last_plan_to_commit_seconds = seconds;
  counters_.last_balancedness_before = target.balancedness_before;
  counters_.last_balancedness_after = target.balancedness_after;
  for (uint64_t waiter : target.waiters) results_.emplace(waiter, result);
  obs::LogInfo("placement version {} committed placement_version={} reasons={} "
               "plan_to_commit_seconds={:.2f}",
               version, version, result.reason, seconds);
}

absl::StatusOr<RebalanceResult> ControlPlane::Rebalance(absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  if (placement_.version() == 0) {
    return absl::FailedPreconditionError("no placement yet: the expert nodes have not registered");
  }
  const uint64_t waiter = ++next_waiter_;
  plan_reasons_.insert("manual");
  plan_waiters_.push_back(waiter);
  wake_ = true;
  auto done = [this, waiter]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return results_.count(waiter) > 0 || stopping_;
  };
  if (!mutex_.AwaitWithTimeout(absl::Condition(&done), timeout) || results_.count(waiter) == 0) {
    plan_waiters_.erase(std::remove(plan_waiters_.begin(), plan_waiters_.end(), waiter),
                        plan_waiters_.end());
    if (target_.has_value()) {
      auto& waiters = target_->waiters;
      waiters.erase(std::remove(waiters.begin(), waiters.end(), waiter), waiters.end());
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "the re-plan was not committed within ", absl::FormatDuration(timeout),
        " (it goes on; see GET /v1/experts/load)"));
  }
  absl::StatusOr<RebalanceResult> result = std::move(results_.at(waiter));
  results_.erase(waiter);
  return result;
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
      if (require_current && it->second->loaded_version < placement_.version()) continue;
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

std::optional<AttentionNodeInfo> ControlPlane::PickAttentionNode(
    uint64_t reserve_tokens, const std::vector<std::string>& avoid_addresses) {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  Node* best = nullptr;
  for (Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_ATTENTION || !node.alive) continue;
    if (node.attention_draining) continue;
    if (std::find(avoid_addresses.begin(), avoid_addresses.end(), node.address) !=
        avoid_addresses.end()) {
      continue;
    }
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
                         best->waiting_sequences,
                         best->attention_draining};
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
                                       node.running_sequences, node.waiting_sequences,
                                       node.attention_draining});
  }
  return result;
}

std::vector<ExpertNodeInfo> ControlPlane::ExpertNodes() {
  absl::MutexLock lock(&mutex_);
  RefreshLocked(absl::Now());
  std::vector<ExpertNodeInfo> result;
  for (const Node& node : nodes_) {
    if (node.kind != moemesh::v1::NODE_KIND_EXPERT) continue;
    const char* drain = node.drain == HeartbeatReply::DRAIN_IN_PROGRESS ? "in_progress"
                        : node.drain == HeartbeatReply::DRAIN_REFUSED   ? "refused"
                        : node.drain == HeartbeatReply::DRAINED         ? "drained"
                                                                        : "";
    result.push_back(ExpertNodeInfo{node.id, node.address, Serving(node), node.in_placement,
                                    node.draining, drain, node.drain_message, node.loaded_version,
                                    node.held_experts, node.max_experts_per_layer});
  }
  return result;
}

ControlPlaneCounters ControlPlane::counters() {
  absl::MutexLock lock(&mutex_);
  counters_.min_used_version = MinUsedVersionLocked();
  RefreshLocked(absl::Now());
  counters_.experts_below_min_replicas = 0;
  for (const auto& entry : placement_.experts()) {
    int serving = 0;
    for (const std::string& id : entry.node_ids()) {
      const Node* node = FindLocked(id);
      serving += node != nullptr && Serving(*node);
    }
    counters_.experts_below_min_replicas += serving < options_.min_replicas;
  }
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
