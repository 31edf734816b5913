// The router's control plane: node registry with heartbeats, the versioned expert placement
// (logical expert -> physical replicas on expert nodes), node health, attention-node choice, and
// the elastic expert pool: a level-triggered reconcile loop that re-plans the placement from the
// recent load (core/placement planner), membership and capacities, and moves to it
// make-before-break:
//   1. the new placement is a *target* version: expert nodes load the experts they gain (in the
//      background, serving the old ones) and report loaded_placement_version = target;
//   2. once every node of the target has, the router *commits* it (GetPlacement returns it);
//   3. attention nodes switch at a forward-pass boundary and report the version they use;
//   4. HeartbeatReply.min_used_placement_version rises to it and expert nodes free the experts
//      no version still in use gives them.
// Re-plans happen on a timer (rebalance_interval, when the predicted balancedness gain is at
// least rebalance_min_gain), when an expert node joins or drains, and on demand (Rebalance()).
// Serves moemesh.v1.ControlPlane over gRPC and answers the router's own questions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/checkpoint/model_config.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/control.grpc.pb.h"

namespace moemesh::router {

struct ControlPlaneOptions {
  // The first placement is computed once this many expert nodes have registered. Without
  // redundant experts or capacities it is logical expert e of every MoE layer on expert node
  // e % expected_expert_nodes (registration order); otherwise the planner's, on uniform load.
  int expected_expert_nodes = 1;
  // Ready() needs this many healthy attention nodes.
  int expected_attention_nodes = 1;
  // A node without a heartbeat for this long is unhealthy.
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // Told to nodes in RegisterReply.
  double heartbeat_interval_seconds = 0.5;
  // Optional (metrics): sees every heartbeat (before it is applied; outside the lock).
  std::function<void(const moemesh::v1::HeartbeatRequest&)> on_heartbeat;

  // Redundant physical experts per MoE layer beyond one per logical expert (planner input).
  int redundant_experts = 0;
  // Every logical expert on at least this many expert nodes (failure redundancy: 2 survives any
  // single node). Lowered to the number of live expert nodes when fewer are left.
  int min_replicas = 1;
  // Re-plan from the recent load every this many seconds (0 = never on a timer); such a timer
  // re-plan is only applied when it raises the predicted mean balancedness by at least
  // rebalance_min_gain.
  double rebalance_interval_seconds = 0;
  double rebalance_min_gain = 0.05;
  // A re-plan keeps a layer's current replicas when that costs at most this much balancedness
  // (planner keep_tolerance): far fewer experts to load for almost the same balance.
  double replan_keep_tolerance = 0.01;
  // The recent routed-token load: [MoE layer (ascending)][logical expert]. Null or empty:
  // uniform. Called without the control plane's lock held.
  std::function<std::vector<std::vector<double>>()> load_window;
  // How often the reconcile loop runs (it also runs after every heartbeat that matters).
  absl::Duration reconcile_interval = absl::Milliseconds(100);
  // A target not loaded by every node within this long is abandoned (and re-planned).
  absl::Duration target_timeout = absl::Seconds(300);
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

// What the router knows about one expert node.
struct ExpertNodeInfo {
  std::string node_id;
  std::string address;
  bool healthy = false;         // alive and serving its committed share
  bool in_placement = false;    // holds replicas in the committed placement
  bool draining = false;
  std::string drain_state;      // "", "in_progress", "refused", "drained"
  std::string drain_message;
  uint64_t loaded_version = 0;
  uint32_t held_experts = 0;
  int max_experts_per_layer = 0;  // 0 = no limit
};

// One committed re-plan (or a re-plan that changed nothing).
struct RebalanceResult {
  uint64_t version = 0;        // committed version (the current one when nothing changed)
  bool changed = false;
  std::string reason;          // "manual", "timer", "join", "drain", "leave", ...
  double balancedness_before = 1.0;  // predicted mean over layers, on the same load window
  double balancedness_after = 1.0;
  double plan_to_commit_seconds = 0;
};

// Counters for the metrics.
struct ControlPlaneCounters {
  uint64_t registrations = 0;
  uint64_t heartbeats = 0;
  uint64_t unknown_heartbeats = 0;
  uint64_t placement_versions = 0;  // == current version
  std::map<std::string, uint64_t> rebalances;  // committed re-plans by reason
  uint64_t targets_abandoned = 0;
  uint64_t drains_refused = 0;
  uint64_t drains_completed = 0;
  double plan_to_commit_seconds_sum = 0;
  double last_plan_to_commit_seconds = 0;
  double last_balancedness_before = 1.0;
  double last_balancedness_after = 1.0;
  uint64_t target_version = 0;  // 0 = none being prepared
  uint64_t min_used_version = 0;
  // Node failure (issue 9).
  uint64_t expert_nodes_lost = 0;        // in-placement expert nodes that stopped heartbeating
  uint64_t redundancy_restored = 0;      // commits that re-placed a lost node's experts
  double last_restore_seconds = 0;       // loss (heartbeat timeout) -> commit without the node
  uint64_t experts_below_min_replicas = 0;  // (layer, expert) pairs with < min_replicas serving
  // Router restart: replicas taken over from what re-registering expert nodes reported holding
  // (instead of being planned and loaded again), and placements rebuilt that way.
  uint64_t adopted_replicas = 0;
  uint64_t placements_adopted = 0;
};

// Thread-safe. Health is re-evaluated (against the clock) on every call, so a node that stops
// heartbeating turns unhealthy, and the placement version is bumped, as soon as anyone asks.
// Owns the reconcile thread (started by the constructor, stopped by the destructor).
class ControlPlane final : public moemesh::v1::ControlPlane::Service {
 public:
  ControlPlane(const checkpoint::ModelConfig& config, ControlPlaneOptions options);
  ~ControlPlane() override;

  // gRPC: node ids reuse RegisterRequest.preferred_id when given (a restarted node with the same
  // name gets its id and its experts back), else "expert-N" / "attention-N". Errors:
  // INVALID_ARGUMENT for an unspecified kind or a preferred_id already used by the other kind.
  // An expert node new to a serving cluster triggers a re-plan ("join").
  // After a router restart the nodes register again with what they hold
  // (RegisterRequest.placement_version, held_experts): versions are numbered above every
  // reported one; before there is a placement, the one the registered expert nodes report
  // holding is adopted when it covers every expert (nothing is loaded again); an expert
  // node registering later with experts becomes a replica of what it holds (adoption waits for
  // the expected expert nodes, at most a heartbeat timeout after the first report). Adoption replaces
  // the first plan; the usual re-plans go on from there (a re-plan "adopt" restores
  // min_replicas when, a heartbeat timeout after adoption, some expert is still short of it).
  grpc::Status Register(grpc::ServerContext* context, const moemesh::v1::RegisterRequest* request,
                        moemesh::v1::RegisterReply* reply) override;
  // Unknown node ids get known = false (register again). Expert nodes get the target version,
  // the oldest version in use and their drain state.
  grpc::Status Heartbeat(grpc::ServerContext* context,
                         const moemesh::v1::HeartbeatRequest* request,
                         moemesh::v1::HeartbeatReply* reply) override;
  // The committed placement, or (request.target) the target being prepared if any.
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
  // Every registered expert node, in registration order.
  std::vector<ExpertNodeInfo> ExpertNodes();
  // The current (committed) placement (version 0 and no experts before enough expert nodes
  // registered).
  moemesh::v1::Placement CurrentPlacement();
  // The target being prepared, if any.
  std::optional<moemesh::v1::Placement> TargetPlacement();
  // The first (layer, logical expert) without a healthy replica, or nullopt when all are served.
  std::optional<std::pair<int, int>> FirstUnservedExpert();
  ControlPlaneCounters counters();
  // Every registered node that gave a metrics address, in registration order.
  std::vector<MetricsTarget> MetricsTargets();

  // Re-plans now from the recent load and waits until the result is committed (or found equal
  // to the current placement). Errors: FAILED_PRECONDITION when there is no placement yet or
  // the nodes cannot hold every expert; DEADLINE_EXCEEDED after `timeout` (the re-plan still
  // goes on).
  absl::StatusOr<RebalanceResult> Rebalance(absl::Duration timeout);

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
    int max_experts_per_layer = 0;
    uint32_t held_experts = 0;
    // What it reported holding when it registered ((layer, expert), sorted): experts a
    // previous router gave it (router restart).
    std::vector<std::pair<int, int>> reported_held;
    bool draining = false;  // asks to leave the placement (SIGTERM)
    moemesh::v1::HeartbeatReply::DrainState drain = moemesh::v1::HeartbeatReply::DRAIN_NONE;
    std::string drain_message;
    uint64_t removed_version = 0;  // committed version that no longer gives it experts
    // Attention nodes.
    uint64_t cache_free_tokens = 0;
    uint64_t cache_capacity_tokens = 0;
    uint32_t running_sequences = 0;
    uint32_t waiting_sequences = 0;
    uint64_t used_version = 0;
    bool attention_draining = false;  // admits no new sequences (SIGTERM)
  };
  // A target placement being prepared.
  struct Target {
    moemesh::v1::Placement placement;  // target = true
    std::set<std::string> reasons;
    absl::Time planned;
    double balancedness_before = 1.0;
    double balancedness_after = 1.0;
    std::vector<uint64_t> waiters;  // Rebalance() calls answered when it commits
  };

  // An expert node serves its experts: alive and has loaded the version that assigned them.
  static bool Serving(const Node& node) {
    return node.alive && node.in_placement && node.loaded_version >= node.assigned_version &&
           node.assigned_version > 0;
  }
  Node* FindLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  uint64_t NextVersionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return ++last_version_; }
  // Re-evaluates liveness; bumps the version when an expert node's healthy flag changes.
  void RefreshLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void MaybeComputePlacementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Before the first placement: without reports, MaybeComputePlacementLocked(). With reports
  // (router restart), once the expected expert nodes registered or a heartbeat timeout after the
  // first report, adopts what the alive expert nodes hold if it covers every expert; past that
  // timeout without coverage, plans as at a first start.
  void MaybeFirstPlacementLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Adopts what the alive expert nodes reported holding when it covers every (MoE layer,
  // expert); returns whether it did.
  bool MaybeAdoptReportedLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Router restart: adds `node` as a replica of every expert it reported holding (a new
  // committed version). The node must be alive and not yet in the placement.
  void MergeReportedLocked(Node& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Router restart: a heartbeat timeout after the adoption, asks for a re-plan ("adopt") when
  // some expert has fewer live replicas than min_replicas (as far as the live nodes allow).
  void CheckAdoptedRedundancyLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Rebuilds placement_.nodes from the registry with version `version`; abandons a target that
  // is now older than the committed version (and asks for a new plan).
  void PublishLocked(uint64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::optional<std::pair<int, int>> FirstUnservedLocked(bool require_current)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  uint64_t MinUsedVersionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool WantsPlanLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // One reconcile pass (see the file comment). `load` is the window, fetched without the lock.
  void ReconcileLocked(absl::Time now, const std::vector<std::vector<double>>& load)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void PlanLocked(absl::Time now, const std::vector<std::vector<double>>& load)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void CommitTargetLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void AbandonTargetLocked(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void UpdateDrainsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Loop();

  const checkpoint::ModelConfig config_;
  const ControlPlaneOptions options_;
  absl::Mutex mutex_;
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mutex_);  // registration order
  int next_expert_index_ ABSL_GUARDED_BY(mutex_) = 0;
  int next_attention_index_ ABSL_GUARDED_BY(mutex_) = 0;
  moemesh::v1::Placement placement_ ABSL_GUARDED_BY(mutex_);
  uint64_t last_version_ ABSL_GUARDED_BY(mutex_) = 0;  // newest version given out (any kind)
  std::vector<bool> published_health_ ABSL_GUARDED_BY(mutex_);  // per placement_.nodes entry
  ControlPlaneCounters counters_ ABSL_GUARDED_BY(mutex_);
  std::optional<Target> target_ ABSL_GUARDED_BY(mutex_);
  std::set<std::string> plan_reasons_ ABSL_GUARDED_BY(mutex_);  // a re-plan is wanted
  std::vector<uint64_t> plan_waiters_ ABSL_GUARDED_BY(mutex_);  // Rebalance() calls waiting
  absl::Time last_plan_ ABSL_GUARDED_BY(mutex_);
  // When the first in-placement expert node not yet re-planned around was declared lost.
  std::optional<absl::Time> lost_since_ ABSL_GUARDED_BY(mutex_);
  // When the placement was adopted from the nodes' reports (router restart), until the check
  // for experts short of min_replicas a heartbeat timeout later.
  std::optional<absl::Time> adopted_at_ ABSL_GUARDED_BY(mutex_);
  // When the first expert node reporting held experts registered (router restart).
  std::optional<absl::Time> first_report_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_waiter_ ABSL_GUARDED_BY(mutex_) = 0;
  std::map<uint64_t, absl::StatusOr<RebalanceResult>> results_ ABSL_GUARDED_BY(mutex_);
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  bool wake_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace moemesh::router
