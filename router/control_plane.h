// The router's control plane: node registry with heartbeats, the versioned static expert
// placement (logical expert -> physical replicas on expert nodes), node health, attention-node
// choice. Serves moemesh.v1.ControlPlane over gRPC and answers the router's own questions
// (readiness, where to send a sequence, which expert has no healthy holder).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/checkpoint/model_config.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/control.grpc.pb.h"

namespace moemesh::router {

struct ControlPlaneOptions {
  // The placement is computed once this many expert nodes have registered; logical expert e of
  // every MoE layer goes to expert node e % expected_expert_nodes (registration order).
  int expected_expert_nodes = 1;
  // Ready() needs this many healthy attention nodes.
  int expected_attention_nodes = 1;
  // A node without a heartbeat for this long is unhealthy.
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // Told to nodes in RegisterReply.
  double heartbeat_interval_seconds = 0.5;
  // Optional (metrics): sees every heartbeat (before it is applied; outside the lock).
  std::function<void(const moemesh::v1::HeartbeatRequest&)> on_heartbeat;
};

// Where a registered node serves /metrics (for Prometheus service discovery).
struct MetricsTarget {
  std::string node_id;
  std::string kind;  // "attention" or "expert"
  std::string metrics_address;
  bool healthy = false;
};

// What the router knows about one attention node (from registration and heartbeats).
struct AttentionNodeInfo {
  std::string node_id;
  std::string address;  // host:port of its AttentionService
  std::string metrics_address;
  bool healthy = false;
  uint64_t cache_free_tokens = 0;  // last heartbeat, minus tokens reserved since
  uint64_t cache_capacity_tokens = 0;
  uint32_t running_sequences = 0;
  uint32_t waiting_sequences = 0;
  bool draining = false;  // admits no new sequences (its heartbeat says so)
};

// Counters for the metrics issue.
struct ControlPlaneCounters {
  uint64_t registrations = 0;
  uint64_t heartbeats = 0;
  uint64_t unknown_heartbeats = 0;
  uint64_t placement_versions = 0;  // == current version
};

// Thread-safe. Health is re-evaluated (against the clock) on every call, so a node that stops
// heartbeating turns unhealthy, and the placement version is bumped, as soon as anyone asks.
class ControlPlane final : public moemesh::v1::ControlPlane::Service {
 public:
  ControlPlane(const checkpoint::ModelConfig& config, ControlPlaneOptions options);

  // gRPC: node ids reuse RegisterRequest.preferred_id when given (a restarted node with the same
  // name gets its id and its experts back), else "expert-N" / "attention-N". Errors:
  // INVALID_ARGUMENT for an unspecified kind or a preferred_id already used by the other kind.
  grpc::Status Register(grpc::ServerContext* context, const moemesh::v1::RegisterRequest* request,
                        moemesh::v1::RegisterReply* reply) override;
  // Unknown node ids get known = false (register again).
  grpc::Status Heartbeat(grpc::ServerContext* context,
                         const moemesh::v1::HeartbeatRequest* request,
                         moemesh::v1::HeartbeatReply* reply) override;
  grpc::Status GetPlacement(grpc::ServerContext* context,
                            const moemesh::v1::GetPlacementRequest* request,
                            moemesh::v1::Placement* reply) override;

  // True when every expert of every MoE layer has a healthy replica that has loaded the current
  // placement version, and the expected attention nodes are registered and healthy. Otherwise
  // `why` (if not null) says what is missing.
  bool Ready(std::string* why);
  // The healthy attention node with the most free cache tokens (first registered on ties), or
  // nullopt. `reserve_tokens` is subtracted from its free estimate until its next heartbeat, so a
  // burst of sequences spreads over the nodes. Draining nodes and nodes whose address is in
  // `avoid_addresses` (they just failed the sequence) are never picked.
  std::optional<AttentionNodeInfo> PickAttentionNode(
      uint64_t reserve_tokens = 0, const std::vector<std::string>& avoid_addresses = {});
  // Every registered attention node, in registration order.
  std::vector<AttentionNodeInfo> AttentionNodes();
  // The current placement (version 0 and no experts before enough expert nodes registered).
  moemesh::v1::Placement CurrentPlacement();
  // The first (layer, logical expert) without a healthy replica, or nullopt when all are served.
  std::optional<std::pair<int, int>> FirstUnservedExpert();
  ControlPlaneCounters counters();
  // Every registered node that gave a metrics address, in registration order.
  std::vector<MetricsTarget> MetricsTargets();

 private:
  struct Node {
    std::string id;
    moemesh::v1::NodeKind kind = moemesh::v1::NODE_KIND_UNSPECIFIED;
    std::string address;
    std::string metrics_address;
    absl::Time last_heartbeat;
    bool alive = true;  // heartbeat within the timeout
    // Expert nodes.
    uint64_t loaded_version = 0;
    uint64_t assigned_version = 0;  // version that (re)gave this node its experts
    bool in_placement = false;
    // Attention nodes.
    uint64_t cache_free_tokens = 0;
    uint64_t cache_capacity_tokens = 0;
    uint32_t running_sequences = 0;
    uint32_t waiting_sequences = 0;
    bool draining = false;
  };

  // An expert node serves its experts: alive and has loaded the version that assigned them.
  static bool Serving(const Node& node) {
    return node.alive && node.in_placement && node.loaded_version >= node.assigned_version &&
           node.assigned_version > 0;
  }
  Node* FindLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Re-evaluates liveness; bumps the version when an expert node's healthy flag changes.
  void RefreshLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void MaybeComputePlacementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Rebuilds placement_.nodes from the registry with version `version`.
  void PublishLocked(uint64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::optional<std::pair<int, int>> FirstUnservedLocked(bool require_current)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const checkpoint::ModelConfig config_;
  const ControlPlaneOptions options_;
  absl::Mutex mutex_;
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mutex_);  // registration order
  int next_expert_index_ ABSL_GUARDED_BY(mutex_) = 0;
  int next_attention_index_ ABSL_GUARDED_BY(mutex_) = 0;
  moemesh::v1::Placement placement_ ABSL_GUARDED_BY(mutex_);
  std::vector<bool> published_health_ ABSL_GUARDED_BY(mutex_);  // per placement_.nodes entry
  ControlPlaneCounters counters_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace moemesh::router
