// The expert node: serves ExpertService.Dispatch from the experts its placement share gives it,
// and follows the router's placement (register, heartbeat, load the share, report the version).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/checkpoint/checkpoint.h"
#include "core/comm/control_client.h"
#include "core/model/expert_shard.h"
#include "core/obs/metrics.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/control.pb.h"
#include "moemesh/v1/expert.grpc.pb.h"

namespace moemesh::expert_node {

class ExpertNodeMetrics;  // expert_metrics.h

// Counters for the metrics issue.
struct ExpertServiceCounters {
  uint64_t dispatches = 0;
  uint64_t rows = 0;            // rows answered (OK replies)
  uint64_t expert_rows = 0;     // (row, expert) pairs computed
  uint64_t not_held = 0;
  uint64_t invalid = 0;
  double compute_seconds = 0;
};

// What one answered (OK) dispatch computed, for metrics.
struct DispatchObservation {
  int layer = 0;
  std::vector<std::pair<int32_t, uint64_t>> expert_rows;  // (expert, rows it computed)
  double compute_seconds = 0;  // request decoded -> reply built
  uint64_t rows = 0;           // distinct hidden rows received
  uint64_t bytes_in = 0;       // request message size
  uint64_t bytes_out = 0;      // reply message size
};
using DispatchObserver = std::function<void(const DispatchObservation&)>;

// The experts of `placement` that list `node_id` among their replicas, sorted.
std::vector<model::ExpertKey> ShareOf(const moemesh::v1::Placement& placement,
                                      const std::string& node_id);

// ExpertService.Dispatch over the installed ExpertShard. Each stream is served in order; a
// request's experts run on up to `dispatch_threads` threads and are added in ascending expert id.
class ExpertService final : public moemesh::v1::ExpertService::Service {
 public:
  ExpertService(const checkpoint::ModelConfig& config, int dispatch_threads);
  ~ExpertService() override;

  grpc::Status Dispatch(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<moemesh::v1::DispatchReply, moemesh::v1::DispatchRequest>* stream)
      override;
  // Serves dispatches through the caller's shared-memory mailbox (core/comm/shm_mailbox.h) on
  // this handler's thread until the caller closes it or the call ends; each request is Handle'd
  // like a stream's. NOT_FOUND when the segment cannot be opened here (another host).
  grpc::Status ServeSharedMemory(grpc::ServerContext* context,
                                 const moemesh::v1::AttachSharedMemoryRequest* request,
                                 grpc::ServerWriter<moemesh::v1::SharedMemoryEvent>* writer)
      override;

  // The reply to one request: OK with partial sums, NOT_HELD naming every expert not held here,
  // or INVALID (not an MoE layer, hidden size differs from the model's, inconsistent sizes).
  // Takes the request's hidden bytes (the rows are read in place, not copied out first).
  moemesh::v1::DispatchReply Handle(moemesh::v1::DispatchRequest& request);

  // Serves `shard` from now on, as placement version `version`.
  void Install(std::shared_ptr<const model::ExpertShard> shard, uint64_t version);
  uint64_t placement_version() const;
  std::shared_ptr<const model::ExpertShard> shard() const;
  ExpertServiceCounters counters() const;
  // Called (on the serving thread) after every OK dispatch. Set before serving.
  void SetDispatchObserver(DispatchObserver observer) { observer_ = std::move(observer); }

 private:
  class Workers;
  DispatchObserver observer_;
  const checkpoint::ModelConfig config_;
  std::unique_ptr<Workers> workers_;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const model::ExpertShard> shard_ ABSL_GUARDED_BY(mutex_);
  uint64_t version_ ABSL_GUARDED_BY(mutex_) = 0;
  ExpertServiceCounters counters_ ABSL_GUARDED_BY(mutex_);
};

struct ExpertNodeOptions {
  std::string model_dir;        // checkpoint directory
  std::string router_address;   // host:port of the router's control plane
  std::string host = "127.0.0.1";
  int port = 0;                 // 0 picks a free port
  std::string node_name;        // RegisterRequest.preferred_id ("" lets the router choose)
  int dispatch_threads = 1;
  double heartbeat_interval_seconds = 0.5;  // until the router names its own
  // Registered capacity: physical experts per MoE layer this node can hold (0 = no limit).
  int max_experts_per_layer = 0;
  // Optional: the process's metrics (see expert_metrics.h) and where they are served
  // (registered with the router so that Prometheus can discover the node).
  std::shared_ptr<obs::MetricsRegistry> metrics;
  std::string metrics_address;
};

// A running expert node: gRPC server (ExpertService + health + reflection), control client, and
// a loader thread that loads each new placement share (only its experts' bytes) and then reports
// the version in heartbeats.
class ExpertNode {
 public:
  // Opens the checkpoint, binds the server, starts registering. Errors: the checkpoint's, or
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<ExpertNode>> Start(ExpertNodeOptions options);
  ~ExpertNode();  // Shutdown()

  int port() const { return port_; }
  std::string address() const;  // host:port as registered
  std::string node_id() const { return control_->node_id(); }
  uint64_t loaded_placement_version() const { return service_->placement_version(); }
  ExpertService& service() { return *service_; }
  // Waits until the loaded placement version is at least `version`; false on timeout.
  bool WaitForLoadedVersion(uint64_t version, absl::Duration timeout);
  // Asks the router to re-plan without this node (heartbeats say draining from now on). The
  // node keeps serving; DrainState() says how it goes.
  void Drain();
  // The router's last answer to the drain (DRAIN_NONE before one), and its message.
  moemesh::v1::HeartbeatReply::DrainState DrainState(std::string* message = nullptr);
  // Waits until the drain state is DRAINED or changes from `seen`; returns the new state
  // (unchanged on timeout).
  moemesh::v1::HeartbeatReply::DrainState WaitDrainChange(
      moemesh::v1::HeartbeatReply::DrainState seen, absl::Duration timeout,
      std::string* message = nullptr);
  // Stops heartbeating and loading, then the server (open streams are cancelled after
  // `grace_seconds`). Idempotent.
  void Shutdown(double grace_seconds = 0.2);

 private:
  ExpertNode() = default;
  void LoaderLoop();
  // One reconcile pass: fetch the target placement if the router names a new one, then hold
  // exactly the experts of every committed version still in use plus the target's (loading only
  // the missing ones), and report the newest version whose share is held.
  void Reconcile();
  void OnHeartbeatReply(const moemesh::v1::HeartbeatReply& reply);

  ExpertNodeOptions options_;
  std::unique_ptr<checkpoint::Checkpoint> checkpoint_;
  std::unique_ptr<ExpertService> service_;
  std::unique_ptr<ExpertNodeMetrics> metrics_;  // null without options.metrics
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<comm::ControlClient> control_;
  absl::Mutex mutex_;
  // Make-before-break state, from the control plane.
  std::optional<moemesh::v1::Placement> committed_ ABSL_GUARDED_BY(mutex_);
  std::optional<moemesh::v1::Placement> target_ ABSL_GUARDED_BY(mutex_);
  uint64_t target_version_ ABSL_GUARDED_BY(mutex_) = 0;  // named by the router; 0 = none
  uint64_t min_used_version_ ABSL_GUARDED_BY(mutex_) = 0;
  // This node's share of each placement version (committed, or the target) that may still be in
  // use, by version.
  std::map<uint64_t, std::vector<model::ExpertKey>> committed_shares_ ABSL_GUARDED_BY(mutex_);
  bool dirty_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  bool draining_ ABSL_GUARDED_BY(mutex_) = false;
  moemesh::v1::HeartbeatReply::DrainState drain_state_ ABSL_GUARDED_BY(mutex_) =
      moemesh::v1::HeartbeatReply::DRAIN_NONE;
  std::string drain_message_ ABSL_GUARDED_BY(mutex_);
  bool shut_down_ = false;
  std::thread loader_;
};

}  // namespace moemesh::expert_node
