// The attention node: gRPC AttentionService (router -> node: add a sequence and stream its
// tokens, abort), the scheduler behind it, and its control-plane membership.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
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
  // Streams the sequence's events; a cancelled call (client gone) aborts the sequence.
  grpc::Status AddSequence(grpc::ServerContext* context,
                           const moemesh::v1::AddSequenceRequest* request,
                           grpc::ServerWriter<moemesh::v1::SequenceEvent>* writer) override;
  grpc::Status Abort(grpc::ServerContext* context, const moemesh::v1::AbortRequest* request,
                     moemesh::v1::AbortReply* reply) override;
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const moemesh::v1::NodeStatusRequest* request,
                         moemesh::v1::NodeStatus* reply) override;

 private:
  Scheduler* scheduler_;
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
  double dispatch_timeout_seconds = 10.0;
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
  Scheduler& scheduler() { return *scheduler_; }
  // Summed over the micro-batch lanes.
  DispatchStatistics dispatch_statistics() const;
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
};

}  // namespace moemesh::attention_node
