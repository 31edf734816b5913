#include "expert_node/expert_metrics.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moemesh::expert_node {
namespace {

}  // namespace

ExpertNodeMetrics::ExpertNodeMetrics(std::shared_ptr<obs::MetricsRegistry> registry,
                                     const checkpoint::ModelConfig& config)
    : registry_(std::move(registry)),
      rows_(registry_->Counter("moemesh_expert_rows_total",
                               "Rows computed per (MoE layer, routed expert): one per row of "
                               "every expert slice of an answered dispatch."),
            config.MoeLayers(), config.n_routed_experts),
      watched_(std::make_shared<Watched>()) {
  compute_seconds_ =
      &registry_
           ->Histogram("moemesh_expert_compute_seconds",
                       "Time to compute one dispatch (all its experts) on this node.")
           .Add({}, obs::ShortDurationBuckets());
  bytes_received_ = &registry_
                         ->Counter("moemesh_expert_bytes_received_total",
                                   "Bytes of dispatch requests answered by this node.")
                         .Add({});
  bytes_sent_ = &registry_
                     ->Counter("moemesh_expert_bytes_sent_total",
                               "Bytes of dispatch replies (expert outputs) sent by this node.")
                     .Add({});
  dispatch_rows_ = &registry_
                        ->Counter("moemesh_expert_dispatch_rows_total",
                                  "Distinct hidden rows received in answered dispatches (the "
                                  "reply carries one output per (row, expert): "
                                  "moemesh_expert_rows_total).")
                        .Add({});
  weights_loaded_bytes_ =
      &registry_
           ->Counter("moemesh_expert_weights_loaded_bytes_total",
                     "Bytes of expert weights read from the checkpoint (start-up and every "
                     "placement change that gave this node new experts).")
           .Add({});
  auto& dispatches = registry_->Counter("moemesh_expert_dispatches_total",
                                        "Dispatch requests by result (ok, not_held, invalid).");
  dispatches_ok_ = &dispatches.Add({{"result", "ok"}});
  prometheus::Counter* not_held = &dispatches.Add({{"result", "not_held"}});
  prometheus::Counter* invalid = &dispatches.Add({{"result", "invalid"}});
  auto& held_family = registry_->Gauge("moemesh_expert_held_experts",
                                       "Routed experts held (loaded) on this node, per MoE layer.");
  std::map<int, prometheus::Gauge*> held;
  for (int layer : config.MoeLayers()) held[layer] = &held_family.Add({{"layer", absl::StrCat(layer)}});
  prometheus::Gauge* version =
      &registry_
           ->Gauge("moemesh_expert_placement_version",
                   "Placement version whose experts this node has loaded and serves.")
           .Add({});
  std::shared_ptr<Watched> watched = watched_;
  registry_->AddRefresh([watched, held, version, not_held, invalid] {
    absl::MutexLock lock(&watched->mutex);
    if (watched->service == nullptr) return;
    std::map<int, int> count;
    if (auto shard = watched->service->shard()) {
      for (const model::ExpertKey& key : shard->HeldExperts()) ++count[key.first];
    }
    for (const auto& [layer, gauge] : held) gauge->Set(count[layer]);
    version->Set(static_cast<double>(watched->service->placement_version()));
    const ExpertServiceCounters counters = watched->service->counters();
    if (counters.not_held > watched->seen.not_held) {
      not_held->Increment(static_cast<double>(counters.not_held - watched->seen.not_held));
    }
    if (counters.invalid > watched->seen.invalid) {
      invalid->Increment(static_cast<double>(counters.invalid - watched->seen.invalid));
    }
    watched->seen = counters;
  });
}

ExpertNodeMetrics::~ExpertNodeMetrics() {
  absl::MutexLock lock(&watched_->mutex);
  watched_->service = nullptr;
}

void ExpertNodeMetrics::OnExpertsLoaded(int64_t bytes) {
  if (bytes > 0) weights_loaded_bytes_->Increment(static_cast<double>(bytes));
}

void ExpertNodeMetrics::Watch(const ExpertService* service) {
  absl::MutexLock lock(&watched_->mutex);
  watched_->service = service;
}

void ExpertNodeMetrics::OnDispatch(const DispatchObservation& observation) {
  for (const auto& [expert, rows] : observation.expert_rows) {
    rows_.Add(observation.layer, expert, static_cast<double>(rows));
  }
  compute_seconds_->Observe(observation.compute_seconds);
  bytes_received_->Increment(static_cast<double>(observation.bytes_in));
  dispatch_rows_->Increment(static_cast<double>(observation.rows));
  bytes_sent_->Increment(static_cast<double>(observation.bytes_out));
  dispatches_ok_->Increment();
}

}  // namespace moemesh::expert_node
