// Prometheus metrics of an attention node: KV cache usage, running and waiting sequences, step
// time by phase, per-expert routed-token counts (logical routing decisions of real tokens), the
// dispatch round trip per expert node, data-path bytes, and expert-node failure handling on the
// data path (failovers by reason, re-dispatched rows, detection time, recovery waits). The routed-token counts also travel
// to the router in heartbeats (for /v1/experts/load and the dashboard).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "attention_node/remote_routed_experts.h"
#include "attention_node/scheduler.h"
#include "core/checkpoint/model_config.h"
#include "core/comm/grpc_expert_transport.h"
#include "core/model/routed_experts.h"
#include "core/obs/metrics.h"
#include "moemesh/v1/control.pb.h"

namespace moemesh::attention_node {

// Wraps one micro-batch lane's RoutedExperts and times its MoE phases: dispatch (rows grouped
// and sent), shared expert (the caller's work between Dispatch and Combine) and dispatch wait
// (Combine waiting for the partial sums).
class TimedRoutedExperts : public model::RoutedExperts {
 public:
  struct Times {
    double dispatch = 0;
    double shared_expert = 0;
    double dispatch_wait = 0;
  };
  explicit TimedRoutedExperts(std::unique_ptr<model::RoutedExperts> inner)
      : inner_(std::move(inner)) {}
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const model::GateDecision& decision) override;
  // The times summed since the previous call.
  Times Take();

 private:
  std::unique_ptr<model::RoutedExperts> inner_;
  absl::Mutex mutex_;
  Times times_ ABSL_GUARDED_BY(mutex_);
};

class AttentionNodeMetrics : public SchedulerObserver {
 public:
  // Registers the node's metric families in `registry`; the (layer, expert) series of every MoE
  // layer of `config` start at zero.
  AttentionNodeMetrics(std::shared_ptr<obs::MetricsRegistry> registry,
                       const checkpoint::ModelConfig& config);
  ~AttentionNodeMetrics() override;  // stops reading the watched scheduler and transport

  // Lane `lane`'s phase times are read after each of its forwards. Call before it runs.
  void AddLane(int lane, TimedRoutedExperts* experts);
  // Gauges and byte counters read these at scrape time (until destruction or the next call;
  // Watch(nullptr, nullptr) stops). Not owned. `dispatch`, if given, sums the lanes' dispatch
  // statistics (RemoteRoutedExperts) for the failover counters.
  void Watch(const Scheduler* scheduler, const comm::GrpcExpertTransport* transport,
             std::function<DispatchStatistics()> dispatch = nullptr);

  void OnForward(int lane, const model::ForwardTrace& trace, double seconds) override;
  void OnStep(double step_seconds, double sampling_seconds) override;
  // From the transport: one reply from `node_id`.
  void OnRoundTrip(const std::string& node_id, double seconds, bool ok);

  // Adds the cumulative routed-token counts of every MoE layer to a heartbeat.
  void FillHeartbeat(moemesh::v1::HeartbeatRequest& heartbeat) const;
  // Cumulative routed tokens of (layer, expert).
  uint64_t routed_tokens(int layer, int expert) const;

 private:
  struct Watched {
    absl::Mutex mutex;
    const Scheduler* scheduler ABSL_GUARDED_BY(mutex) = nullptr;
    const comm::GrpcExpertTransport* transport ABSL_GUARDED_BY(mutex) = nullptr;
    uint64_t bytes_sent ABSL_GUARDED_BY(mutex) = 0;
    uint64_t bytes_received ABSL_GUARDED_BY(mutex) = 0;
    uint64_t shared_memory_dispatches ABSL_GUARDED_BY(mutex) = 0;
    std::function<DispatchStatistics()> dispatch ABSL_GUARDED_BY(mutex);
    DispatchStatistics dispatch_seen ABSL_GUARDED_BY(mutex);  // advanced into the counters
  };

  std::shared_ptr<obs::MetricsRegistry> registry_;
  const int layers_;
  const int experts_;
  std::vector<int> moe_layers_;
  std::unique_ptr<std::atomic<uint64_t>[]> routed_;  // [layer * experts + expert]
  obs::LayerExpertCounters routed_counters_;
  prometheus::Histogram* phase_attention_;
  prometheus::Histogram* phase_dispatch_;
  prometheus::Histogram* phase_shared_expert_;
  prometheus::Histogram* phase_dispatch_wait_;
  prometheus::Histogram* phase_sampling_;
  prometheus::Histogram* step_seconds_;
  prometheus::Counter* forward_tokens_;
  prometheus::Family<prometheus::Histogram>* round_trip_family_;
  prometheus::Family<prometheus::Counter>* round_trip_errors_family_;
  std::shared_ptr<Watched> watched_;
  absl::Mutex mutex_;
  std::map<int, TimedRoutedExperts*> lanes_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Histogram*> round_trips_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Counter*> round_trip_errors_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace moemesh::attention_node
