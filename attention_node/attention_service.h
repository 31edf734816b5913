// The attention node: gRPC AttentionService (router -> node: add a sequence and stream its
// tokens, abort), the scheduler behind it, and its control-plane membership.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attention_node/node_metrics.h"
#include "attention_node/placement_table.h"
#include "attention_node/remote_routed_experts.h"
#include "attention_node/scheduler.h"
#include "core/checkpoint/checkpoint.h"
#include "core/comm/control_client.h"
#include "core/comm/expert_transport.h"
#include "core/model/deepseek_model.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/attention.grpc.pb.h"

namespace moemesh::attention_node {

// Serves AttentionService on top of a Scheduler.
class AttentionServiceImpl final : public moemesh::v1::AttentionService::Service {
 public:
  explicit AttentionServiceImpl(Scheduler* scheduler) : scheduler_(scheduler) {}
  // Streams the sequence's events; a cancelled call (client gone) aborts the sequence. While
  // draining, new calls get UNAVAILABLE (the router picks another node); after HandOver() the
  // stream ends with a HANDED_OVER event and its sequence is aborted here.
  grpc::Status AddSequence(grpc::ServerContext* context,
                           const moemesh::v1::AddSequenceRequest* request,
                           grpc::ServerWriter<moemesh::v1::SequenceEvent>* writer) override;
  grpc::Status Abort(grpc::ServerContext* context, const moemesh::v1::AbortRequest* request,
                     moemesh::v1::AbortReply* reply) override;
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const moemesh::v1::NodeStatusRequest* request,
                         moemesh::v1::NodeStatus* reply) override;

  // Drain, step 1: refuse new sequences. Running ones go on.
  void StopAdmitting() { admitting_.store(false); }
  // Drain, step 2: give every running sequence back to the router (HANDED_OVER).
  void HandOver() { handing_over_.store(true); }
  // AddSequence calls still streaming.
  int open_streams() const { return open_streams_.load(); }

 private:
  Scheduler* scheduler_;
  std::atomic<bool> admitting_{true};
  std::atomic<bool> handing_over_{false};
  std::atomic<int> open_streams_{0};
};

struct AttentionNodeOptions {
  std::string model_dir;
  std::string router_address;  // control plane host:port
  std::string host = "127.0.0.1";
  int port = 0;
  std::string node_name;
  int64_t cache_tokens = 65536;      // latent cache capacity, in token positions
  int cache_block_size = model::DeepseekModel::kDefaultCacheBlockSize;
  SchedulerOptions scheduler;
  double dispatch_timeout_seconds = 10.0;  // ceiling of the adaptive dispatch deadline
  double dispatch_timeout_floor_seconds = 1.0;  // its floor
  // Expert nodes on this host are reached through shared-memory mailboxes, the others over the
  // gRPC stream (comm::GrpcExpertTransportOptions::shared_memory).
  bool shared_memory_dispatch = true;
  // A step whose experts have no live node waits this long for them to be re-placed.
  double expert_recovery_timeout_seconds = 120;
  // Optional: the process's metrics (see node_metrics.h) and where they are served (registered
  // with the router so that Prometheus can discover the node).
  std::shared_ptr<obs::MetricsRegistry> metrics;
  std::string metrics_address;
};

class AttentionNode {
 public:
  // Loads everything but the routed experts, binds the server, starts registering.
  static absl::StatusOr<std::unique_ptr<AttentionNode>> Start(AttentionNodeOptions options);
  ~AttentionNode();
  std::string address() const;
  // The id the router gave this node ("" until registered).
  std::string node_id() const { return control_ != nullptr ? control_->node_id() : ""; }
  Scheduler& scheduler() { return *scheduler_; }
  // Summed over the micro-batch lanes.
  DispatchStatistics dispatch_statistics() const;
  // Graceful leave (SIGTERM): stops admitting sequences (heartbeats say draining, so the router
  // sends none), waits up to `timeout` for the running ones to finish, hands the others back to
  // the router (which continues them on another node), waits for their streams to close (at
  // most `handover_timeout`), then Shutdown(). Returns how many sequences were handed back.
  int Drain(absl::Duration timeout, absl::Duration handover_timeout = absl::Seconds(10));
  void Shutdown();
  // Null unless started with options.metrics.
  const AttentionNodeMetrics* metrics() const { return metrics_.get(); }

 private:
  AttentionNode() = default;
  // Fetches the router's newest placement now (a dispatch found an expert without a holder).
  void RefreshPlacement();
  AttentionNodeOptions options_;
  std::unique_ptr<checkpoint::Checkpoint> checkpoint_;
  std::unique_ptr<model::DeepseekModel> model_;
  std::unique_ptr<AttentionNodeMetrics> metrics_;  // null without options.metrics
  PlacementTable placement_;
  std::unique_ptr<comm::ExpertTransport> transport_;
  std::vector<RemoteRoutedExperts*> lanes_;  // owned by the scheduler
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<AttentionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<comm::ControlClient> control_;
  std::atomic<comm::ControlClient*> control_for_refresh_{nullptr};  // set once control_ exists
  int port_ = 0;
  bool shut_down_ = false;
  std::atomic<bool> draining_{false};  // told to the router in every heartbeat
};

}  // namespace moemesh::attention_node
