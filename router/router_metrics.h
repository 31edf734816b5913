// The router's Prometheus metrics and its observability endpoints:
//   GET /metrics              Prometheus text format (vLLM-style request metrics, per-layer
//                             balancedness, placement version, node health, queue sizes)
//   GET /v1/experts/load      per-expert routed tokens (total and recent) and the placement
//   GET /dashboard            self-contained HTML heatmap of expert load (refreshes itself)
//   GET /v1/metrics/targets   Prometheus HTTP service discovery: the nodes' /metrics addresses
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/obs/metrics.h"
#include "router/control_plane.h"
#include "router/expert_load.h"
#include "router/http_server.h"

namespace moemesh::router {

class RouterMetrics : public HttpServerObserver {
 public:
  // Neither pointer is owned; both must outlive this object's routes.
  RouterMetrics(ControlPlane* control, ExpertLoadTracker* load);

  void OnRequestStart() override;
  void OnFirstToken(double seconds) override;
  void OnInterTokenLatency(double seconds, int count) override;
  void OnRequestEnd(const RequestOutcome& outcome) override;

  // A sequence moved to another attention node (GrpcAttentionBackendOptions::on_resubmit):
  // `reason` labels moemesh_sequence_resubmissions_total; `recomputed_tokens` (the tokens it
  // had streamed, prefilled again by the new node) adds to moemesh_resubmitted_tokens_total.
  void OnSequenceResubmitted(const std::string& reason, int64_t recomputed_tokens);
  // A sequence found no attention node to continue on and failed.
  void OnFailoverExhausted();

  // The GET routes above (for HttpServerOptions::routes).
  std::vector<HttpRoute> Routes();
  obs::MetricsRegistry& registry() { return *registry_; }

 private:
  // The counter of `family` with label=value, made once and kept in `cache` (a guarded map).
  prometheus::Counter& Labeled(prometheus::Family<prometheus::Counter>& family,
                               std::map<std::string, prometheus::Counter*>& cache,
                               const std::string& label, const std::string& value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Refresh();

  ControlPlane* control_;
  ExpertLoadTracker* load_;
  std::shared_ptr<obs::MetricsRegistry> registry_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* in_flight_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Family<prometheus::Counter>* success_family_;
  prometheus::Family<prometheus::Counter>* errors_family_;
  prometheus::Family<prometheus::Gauge>* balancedness_family_;
  prometheus::Family<prometheus::Gauge>* node_healthy_family_;
  prometheus::Gauge* placement_version_;
  // Elastic expert pool (from ControlPlaneCounters; counters advance by the deltas seen).
  prometheus::Family<prometheus::Counter>* rebalances_family_;
  std::map<std::string, prometheus::Counter*> rebalances_;  // refresh only
  std::map<std::string, uint64_t> rebalances_seen_;          // refresh only
  prometheus::Counter* drains_refused_;
  prometheus::Counter* drains_completed_;
  prometheus::Counter* targets_abandoned_;
  prometheus::Counter* plan_to_commit_seconds_;
  prometheus::Gauge* last_plan_to_commit_seconds_;
  prometheus::Gauge* balancedness_before_;
  prometheus::Gauge* balancedness_after_;
  prometheus::Gauge* target_version_;
  prometheus::Gauge* min_used_version_;
  prometheus::Counter* expert_nodes_lost_;
  prometheus::Counter* redundancy_restored_;
  prometheus::Counter* adopted_replicas_;
  prometheus::Gauge* last_restore_seconds_;
  prometheus::Gauge* below_min_replicas_;
  ControlPlaneCounters seen_;  // refresh only
  prometheus::Family<prometheus::Counter>* resubmissions_family_;
  prometheus::Counter* resubmitted_tokens_;
  prometheus::Counter* failovers_exhausted_;
  prometheus::Family<prometheus::Gauge>* node_draining_family_;
  absl::Mutex mutex_;
  std::map<std::string, prometheus::Counter*> success_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Counter*> errors_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Counter*> resubmissions_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Gauge*> node_draining_;       // refresh only
  std::map<int, prometheus::Gauge*> balancedness_;                // refresh only (registry lock)
  std::map<std::string, prometheus::Gauge*> node_healthy_;        // refresh only
};

// The /dashboard page (HTML + inline JS and CSS, no external resources).
const char* DashboardHtml();

}  // namespace moemesh::router
