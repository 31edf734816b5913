#include "router/router_metrics.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moemesh::router {

RouterMetrics::RouterMetrics(ControlPlane* control, ExpertLoadTracker* load)
    : control_(control), load_(load), registry_(std::make_shared<obs::MetricsRegistry>()) {
  obs::MetricsRegistry& r = *registry_;
  running_ = &r.Gauge("moemesh_num_requests_running",
                      "Sequences in the attention nodes' batches (from their heartbeats).")
                  .Add({});
  waiting_ = &r.Gauge("moemesh_num_requests_waiting",
                      "Sequences waiting for cache room on the attention nodes (heartbeats).")
                  .Add({});
  in_flight_ = &r.Gauge("moemesh_router_requests_in_flight",
                        "Completion requests the router is serving now.")
                    .Add({});
  ttft_ = &r.Histogram("moemesh_time_to_first_token_seconds",
                       "Time from request received to its first generated token.")
               .Add({}, obs::TimeToFirstTokenBuckets());
  itl_ = &r.Histogram("moemesh_inter_token_latency_seconds",
                      "Time between consecutive generated tokens of a sequence.")
              .Add({}, obs::InterTokenLatencyBuckets());
  e2e_ = &r.Histogram("moemesh_e2e_request_latency_seconds",
                      "Time from request received to response complete.")
              .Add({}, obs::E2eRequestLatencyBuckets());
  prompt_tokens_ =
      &r.Counter("moemesh_prompt_tokens_total", "Prompt tokens of completed requests.").Add({});
  generation_tokens_ =
      &r.Counter("moemesh_generation_tokens_total", "Generated tokens of completed requests.")
           .Add({});
  success_family_ = &r.Counter("moemesh_request_success_total",
                               "Requests answered successfully, by finish reason (of choice 0).");
  errors_family_ = &r.Counter("moemesh_request_errors_total",
                              "Requests that failed, by HTTP status (499: client went away).");
  balancedness_family_ =
      &r.Gauge("moemesh_layer_balancedness",
               "Per MoE layer: mean / max rows per expert node over the last window (1 = even).");
  node_healthy_family_ = &r.Gauge("moemesh_node_healthy",
                                  "1 if the node heartbeats within the timeout, else 0.");
  placement_version_ =
      &r.Gauge("moemesh_placement_version", "Current expert placement version.").Add({});
  rebalances_family_ = &r.Counter(
      "moemesh_rebalances_total",
      "Committed placement re-plans by reason (manual, timer, join, drain, ...; a re-plan with "
      "several reasons counts once for each).");
  for (const char* reason : {"manual", "timer", "join", "drain"}) {
    rebalances_[reason] = &rebalances_family_->Add({{"reason", reason}});
  }
  drains_refused_ = &r.Counter("moemesh_drains_refused_total",
                               "Expert node drains refused: the other nodes cannot hold every "
                               "expert.")
                         .Add({});
  drains_completed_ =
      &r.Counter("moemesh_drains_completed_total", "Expert nodes drained out of the placement.")
           .Add({});
  targets_abandoned_ = &r.Counter("moemesh_placement_targets_abandoned_total",
                                  "Placement targets abandoned before commit (a node left or "
                                  "restarted, or loading timed out); re-planned.")
                            .Add({});
  plan_to_commit_seconds_ = &r.Counter("moemesh_rebalance_plan_to_commit_seconds_total",
                                       "Summed time from re-plan to commit (expert loading).")
                                 .Add({});
  last_plan_to_commit_seconds_ = &r.Gauge("moemesh_rebalance_last_plan_to_commit_seconds",
                                          "Time from re-plan to commit of the last re-plan.")
                                      .Add({});
  auto& predicted = r.Gauge("moemesh_rebalance_balancedness",
                            "Predicted mean balancedness (mean / max node load) over the load "
                            "window of the last committed re-plan, before and after it.");
  balancedness_before_ = &predicted.Add({{"when", "before"}});
  balancedness_after_ = &predicted.Add({{"when", "after"}});
  target_version_ = &r.Gauge("moemesh_placement_target_version",
                             "Placement version being prepared (0 = none).")
                         .Add({});
  min_used_version_ = &r.Gauge("moemesh_placement_min_used_version",
                               "Oldest placement version an attention node may still use.")
                           .Add({});
  expert_nodes_lost_ = &r.Counter("moemesh_expert_nodes_lost_total",
                                  "Expert nodes of the placement that stopped heartbeating (the "
                                  "router re-plans without them).")
                            .Add({});
  redundancy_restored_ = &r.Counter("moemesh_redundancy_restored_total",
                                    "Committed re-plans that re-placed a lost expert node's "
                                    "experts on the others.")
                              .Add({});
  adopted_replicas_ = &r.Counter("moemesh_adopted_replicas_total",
                                 "Replicas taken over from what expert nodes reported holding "
                                 "when they registered with this router after it restarted "
                                 "(kept as they are: no expert loaded again).")
                           .Add({});
  last_restore_seconds_ = &r.Gauge("moemesh_redundancy_last_restore_seconds",
                                   "Time from declaring an expert node lost to committing a "
                                   "placement without it (the survivors loaded its experts).")
                               .Add({});
  below_min_replicas_ = &r.Gauge("moemesh_experts_below_min_replicas",
                                 "(layer, logical expert) pairs served by fewer healthy expert "
                                 "nodes than --min-replicas (0 = full failure redundancy).")
                             .Add({});
  resubmissions_family_ = &r.Counter(
      "moemesh_sequence_resubmissions_total",
      "Sequences moved to another attention node as prompt + streamed tokens, by reason: "
      "node_failed (stream broken, node unavailable), node_unhealthy (no heartbeat), "
      "node_drained (handed back by a draining node).");
  resubmitted_tokens_ =
      &r.Counter("moemesh_resubmitted_tokens_total",
                 "Streamed tokens of resubmitted sequences, recomputed (prefilled) by their new node.")
           .Add({});
  failovers_exhausted_ =
      &r.Counter("moemesh_failover_exhausted_total",
                 "Sequences that lost their attention node and found no other within the timeout.")
           .Add({});
  node_draining_family_ = &r.Gauge("moemesh_node_draining",
                                   "1 while an attention node drains (admits no new sequences).");
  {
    absl::MutexLock lock(&mutex_);
    for (const char* reason : {"stop", "length"}) {
      Labeled(*success_family_, success_, "finished_reason", reason);
    }
    for (const char* reason : {"node_failed", "node_unhealthy", "node_drained"}) {
      Labeled(*resubmissions_family_, resubmissions_, "reason", reason);
    }
  }
  registry_->AddRefresh([this] { Refresh(); });
}

prometheus::Counter& RouterMetrics::Labeled(prometheus::Family<prometheus::Counter>& family,
                                            std::map<std::string, prometheus::Counter*>& cache,
                                            const std::string& label, const std::string& value) {
  auto it = cache.find(value);
  if (it == cache.end()) it = cache.emplace(value, &family.Add({{label, value}})).first;
  return *it->second;
}

void RouterMetrics::OnRequestStart() { in_flight_->Increment(); }

void RouterMetrics::OnFirstToken(double seconds) { ttft_->Observe(seconds); }

void RouterMetrics::OnInterTokenLatency(double seconds, int count) {
  for (int i = 0; i < count; ++i) itl_->Observe(seconds);
}

void RouterMetrics::OnRequestEnd(const RequestOutcome& outcome) {
  in_flight_->Decrement();
  prompt_tokens_->Increment(static_cast<double>(outcome.prompt_tokens));
  generation_tokens_->Increment(static_cast<double>(outcome.completion_tokens));
  if (outcome.ok) {
    e2e_->Observe(outcome.e2e_seconds);
    const std::string reason =
        outcome.finish_reasons.empty() || outcome.finish_reasons[0].empty()
            ? std::string("unknown")
            : outcome.finish_reasons[0];
    absl::MutexLock lock(&mutex_);
    Labeled(*success_family_, success_, "finished_reason", reason).Increment();
  } else {
    absl::MutexLock lock(&mutex_);
    Labeled(*errors_family_, errors_, "code", absl::StrCat(outcome.http_status)).Increment();
  }
}

void RouterMetrics::OnSequenceResubmitted(const std::string& reason, int64_t recomputed_tokens) {
  {
    absl::MutexLock lock(&mutex_);
    Labeled(*resubmissions_family_, resubmissions_, "reason", reason).Increment();
  }
  resubmitted_tokens_->Increment(static_cast<double>(recomputed_tokens));
}

void RouterMetrics::OnFailoverExhausted() { failovers_exhausted_->Increment(); }

void RouterMetrics::Refresh() {
  const moemesh::v1::Placement placement = control_->CurrentPlacement();
  placement_version_->Set(static_cast<double>(placement.version()));
  uint64_t running = 0, waiting = 0;
  auto healthy_gauge = [&](const std::string& node, const char* kind) -> prometheus::Gauge& {
    auto it = node_healthy_.find(node);
    if (it == node_healthy_.end()) {
      it = node_healthy_.emplace(node, &node_healthy_family_->Add({{"node", node}, {"kind", kind}}))
               .first;
    }
    return *it->second;
  };
  for (const AttentionNodeInfo& node : control_->AttentionNodes()) {
    healthy_gauge(node.node_id, "attention").Set(node.healthy ? 1 : 0);
    auto draining = node_draining_.find(node.node_id);
    if (draining == node_draining_.end()) {
      draining =
          node_draining_.emplace(node.node_id, &node_draining_family_->Add({{"node", node.node_id}}))
              .first;
    }
    draining->second->Set(node.draining ? 1 : 0);
    if (!node.healthy) continue;
    running += node.running_sequences;
    waiting += node.waiting_sequences;
  }
  for (const moemesh::v1::ExpertNode& node : placement.nodes()) {
    healthy_gauge(node.node_id(), "expert").Set(node.healthy() ? 1 : 0);
  }
  running_->Set(static_cast<double>(running));
  waiting_->Set(static_cast<double>(waiting));

  const ControlPlaneCounters counters = control_->counters();
  for (const auto& [reason, count] : counters.rebalances) {
    auto it = rebalances_.find(reason);
    if (it == rebalances_.end()) {
      it = rebalances_.emplace(reason, &rebalances_family_->Add({{"reason", reason}})).first;
    }
    const uint64_t seen = rebalances_seen_[reason];
    if (count > seen) it->second->Increment(static_cast<double>(count - seen));
    rebalances_seen_[reason] = count;
  }
  auto advance = [](prometheus::Counter* counter, double now, double seen) {
    if (now > seen) counter->Increment(now - seen);
  };
  advance(drains_refused_, counters.drains_refused, seen_.drains_refused);
  advance(drains_completed_, counters.drains_completed, seen_.drains_completed);
  advance(targets_abandoned_, counters.targets_abandoned, seen_.targets_abandoned);
  advance(plan_to_commit_seconds_, counters.plan_to_commit_seconds_sum,
          seen_.plan_to_commit_seconds_sum);
  advance(expert_nodes_lost_, counters.expert_nodes_lost, seen_.expert_nodes_lost);
  advance(redundancy_restored_, counters.redundancy_restored, seen_.redundancy_restored);
  advance(adopted_replicas_, counters.adopted_replicas, seen_.adopted_replicas);
  seen_ = counters;
  last_restore_seconds_->Set(counters.last_restore_seconds);
  below_min_replicas_->Set(static_cast<double>(counters.experts_below_min_replicas));
  last_plan_to_commit_seconds_->Set(counters.last_plan_to_commit_seconds);
  balancedness_before_->Set(counters.last_balancedness_before);
  balancedness_after_->Set(counters.last_balancedness_after);
  target_version_->Set(static_cast<double>(counters.target_version));
  min_used_version_->Set(static_cast<double>(counters.min_used_version));

  const std::vector<LayerLoad> layers = load_->Layers();
  const std::vector<NodeLayerLoad> nodes = ExpertLoadTracker::NodeLoads(layers, placement);
  for (size_t i = 0; i < layers.size(); ++i) {
    std::vector<double> rows;
    for (const NodeLayerLoad& node : nodes) rows.push_back(node.recent_rows[i]);
    auto it = balancedness_.find(layers[i].layer);
    if (it == balancedness_.end()) {
      it = balancedness_
               .emplace(layers[i].layer,
                        &balancedness_family_->Add({{"layer", absl::StrCat(layers[i].layer)}}))
               .first;
    }
    it->second->Set(ExpertLoadTracker::Balancedness(rows));
  }
}

std::vector<HttpRoute> RouterMetrics::Routes() {
  std::vector<HttpRoute> routes;
  routes.push_back({"GET", "/metrics", [this](const HttpRequest&) {
                      return MakeResponse(200, registry_->SerializeText(),
                                          "text/plain; version=0.0.4; charset=utf-8");
                    }});
  routes.push_back({"GET", "/v1/experts/load", [this](const HttpRequest&) {
                      HttpResponse response = MakeResponse(
                          200, load_->LoadJson(control_->CurrentPlacement()).dump());
                      response.SetHeader("Cache-Control", "no-cache");
                      return response;
                    }});
  routes.push_back({"GET", "/dashboard", [](const HttpRequest&) {
                      return MakeResponse(200, DashboardHtml(), "text/html; charset=utf-8");
                    }});
  routes.push_back({"GET", "/v1/metrics/targets", [this](const HttpRequest&) {
                      nlohmann::json groups = nlohmann::json::array();
                      for (const MetricsTarget& target : control_->MetricsTargets()) {
                        groups.push_back({{"targets", {target.metrics_address}},
                                          {"labels",
                                           {{"node", target.node_id}, {"kind", target.kind}}}});
                      }
                      return MakeResponse(200, groups.dump());
                    }});
  return routes;
}

}  // namespace moemesh::router
