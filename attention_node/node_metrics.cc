#include "attention_node/node_metrics.h"

#include <chrono>
#include <utility>

namespace moemesh::attention_node {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<model::RoutedExperts::Combine> TimedRoutedExperts::Dispatch(
    int layer, const float* hidden, int64_t rows, const model::GateDecision& decision) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Combine> combine = inner_->Dispatch(layer, hidden, rows, decision);
  const auto dispatched = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&mutex_);
    times_.dispatch += std::chrono::duration<double>(dispatched - start).count();
  }
  if (!combine.ok()) return combine;
  return Combine([this, dispatched, inner = *std::move(combine)](float* out) -> absl::Status {
    const auto wait_start = std::chrono::steady_clock::now();
    absl::Status status = inner(out);
    absl::MutexLock lock(&mutex_);
    times_.shared_expert += std::chrono::duration<double>(wait_start - dispatched).count();
    times_.dispatch_wait += Since(wait_start);
    return status;
  });
}

TimedRoutedExperts::Times TimedRoutedExperts::Take() {
  absl::MutexLock lock(&mutex_);
  return std::exchange(times_, Times{});
}

AttentionNodeMetrics::AttentionNodeMetrics(std::shared_ptr<obs::MetricsRegistry> registry,
                                           const checkpoint::ModelConfig& config)
    : registry_(std::move(registry)),
      layers_(config.num_hidden_layers),
      experts_(config.n_routed_experts),
      moe_layers_(config.MoeLayers()),
      routed_(new std::atomic<uint64_t>[static_cast<size_t>(layers_) * experts_]()),
      routed_counters_(
          registry_->Counter("moemesh_expert_routed_tokens_total",
                             "Logical routing decisions of real tokens (prompt and generated "
                             "tokens fed through the model, top_k per token) per MoE layer and "
                             "routed expert."),
          moe_layers_, experts_),
      watched_(std::make_shared<Watched>()) {
  auto& phases = registry_->Histogram(
      "moemesh_step_phase_seconds",
      "Time per micro-batch forward by phase (attention: everything but the routed experts' "
      "dispatch, shared expert and dispatch wait; dispatch: grouping and sending rows; "
      "dispatch_wait: waiting for partial sums), and per step for sampling.");
  const auto& buckets = obs::ShortDurationBuckets();
  phase_attention_ = &phases.Add({{"phase", "attention"}}, buckets);
  phase_dispatch_ = &phases.Add({{"phase", "dispatch"}}, buckets);
  phase_shared_expert_ = &phases.Add({{"phase", "shared_expert"}}, buckets);
  phase_dispatch_wait_ = &phases.Add({{"phase", "dispatch_wait"}}, buckets);
  phase_sampling_ = &phases.Add({{"phase", "sampling"}}, buckets);
  step_seconds_ = &registry_->Histogram("moemesh_step_seconds",
                                        "Wall time of one scheduler step (all micro-batches).")
                       .Add({}, buckets);
  forward_tokens_ = &registry_->Counter("moemesh_forward_tokens_total",
                                        "Tokens (rows) fed through the model in steps.")
                         .Add({});
  round_trip_family_ = &registry_->Histogram(
      "moemesh_dispatch_round_trip_seconds",
      "Expert data path round trip per expert node: request written -> reply read.");
  round_trip_errors_family_ = &registry_->Counter(
      "moemesh_dispatch_errors_total", "Dispatch replies per expert node that were not OK.");

  auto& cache_usage = registry_->Gauge(
      "moemesh_kv_cache_usage_perc", "Fraction of latent KV cache blocks in use (0 to 1).");
  auto& running = registry_->Gauge("moemesh_num_sequences_running",
                                   "Sequences admitted to the batch on this node.");
  auto& waiting = registry_->Gauge("moemesh_num_sequences_waiting",
                                   "Sequences waiting for cache room on this node.");
  auto& capacity = registry_->Gauge("moemesh_kv_cache_capacity_tokens",
                                    "Latent KV cache capacity in token positions.");
  auto& bytes_sent = registry_->Counter("moemesh_dispatch_bytes_sent_total",
                                        "Bytes of dispatch requests sent to expert nodes.");
  auto& bytes_received = registry_->Counter(
      "moemesh_dispatch_bytes_received_total", "Bytes of dispatch replies from expert nodes.");
  prometheus::Gauge* usage_gauge = &cache_usage.Add({});
  prometheus::Gauge* running_gauge = &running.Add({});
  prometheus::Gauge* waiting_gauge = &waiting.Add({});
  prometheus::Gauge* capacity_gauge = &capacity.Add({});
  prometheus::Counter* sent_counter = &bytes_sent.Add({});
  prometheus::Counter* received_counter = &bytes_received.Add({});
  std::shared_ptr<Watched> watched = watched_;
  registry_->AddRefresh([=] {
    absl::MutexLock lock(&watched->mutex);
    if (watched->scheduler != nullptr) {
      const SchedulerStatus status = watched->scheduler->Status();
      usage_gauge->Set(status.cache_capacity_tokens > 0
                           ? static_cast<double>(status.cache_used_tokens) /
                                 static_cast<double>(status.cache_capacity_tokens)
                           : 0.0);
      running_gauge->Set(status.running);
      waiting_gauge->Set(status.waiting);
      capacity_gauge->Set(static_cast<double>(status.cache_capacity_tokens));
    }
    if (watched->transport != nullptr) {
      const comm::ExpertTransportCounters counters = watched->transport->counters();
      if (counters.bytes_sent > watched->bytes_sent) {
        sent_counter->Increment(static_cast<double>(counters.bytes_sent - watched->bytes_sent));
        watched->bytes_sent = counters.bytes_sent;
      }
      if (counters.bytes_received > watched->bytes_received) {
        received_counter->Increment(
            static_cast<double>(counters.bytes_received - watched->bytes_received));
        watched->bytes_received = counters.bytes_received;
      }
    }
  });
}

AttentionNodeMetrics::~AttentionNodeMetrics() {
  absl::MutexLock lock(&watched_->mutex);
  watched_->scheduler = nullptr;
  watched_->transport = nullptr;
}

void AttentionNodeMetrics::AddLane(int lane, TimedRoutedExperts* experts) {
  absl::MutexLock lock(&mutex_);
  lanes_[lane] = experts;
}

void AttentionNodeMetrics::Watch(const Scheduler* scheduler,
                                 const comm::GrpcExpertTransport* transport) {
  absl::MutexLock lock(&watched_->mutex);
  watched_->scheduler = scheduler;
  watched_->transport = transport;
}

void AttentionNodeMetrics::OnForward(int lane, const model::ForwardTrace& trace, double seconds) {
  int64_t rows = 0;
  for (const auto& [layer, decision] : trace.gates) {
    if (layer < 0 || layer >= layers_) continue;
    rows = std::max(rows, decision.rows());
    std::vector<uint64_t> counts(experts_, 0);
    for (int32_t expert : decision.experts) {
      if (expert >= 0 && expert < experts_) ++counts[expert];
    }
    for (int expert = 0; expert < experts_; ++expert) {
      if (counts[expert] == 0) continue;
      routed_[static_cast<size_t>(layer) * experts_ + expert].fetch_add(
          counts[expert], std::memory_order_relaxed);
      routed_counters_.Add(layer, expert, static_cast<double>(counts[expert]));
    }
  }
  forward_tokens_->Increment(static_cast<double>(rows));
  TimedRoutedExperts* experts = nullptr;
  {
    absl::MutexLock lock(&mutex_);
    auto it = lanes_.find(lane);
    if (it != lanes_.end()) experts = it->second;
  }
  TimedRoutedExperts::Times times;
  if (experts != nullptr) times = experts->Take();
  phase_dispatch_->Observe(times.dispatch);
  phase_shared_expert_->Observe(times.shared_expert);
  phase_dispatch_wait_->Observe(times.dispatch_wait);
  phase_attention_->Observe(
      std::max(0.0, seconds - times.dispatch - times.shared_expert - times.dispatch_wait));
}

void AttentionNodeMetrics::OnStep(double step_seconds, double sampling_seconds) {
  step_seconds_->Observe(step_seconds);
  phase_sampling_->Observe(sampling_seconds);
}

void AttentionNodeMetrics::OnRoundTrip(const std::string& node_id, double seconds, bool ok) {
  absl::MutexLock lock(&mutex_);
  if (!ok) {
    auto it = round_trip_errors_.find(node_id);
    if (it == round_trip_errors_.end()) {
      it = round_trip_errors_.emplace(node_id, &round_trip_errors_family_->Add({{"node", node_id}}))
               .first;
    }
    it->second->Increment();
    return;
  }
  auto it = round_trips_.find(node_id);
  if (it == round_trips_.end()) {
    it = round_trips_
             .emplace(node_id, &round_trip_family_->Add({{"node", node_id}},
                                                        obs::ShortDurationBuckets()))
             .first;
  }
  it->second->Observe(seconds);
}

void AttentionNodeMetrics::FillHeartbeat(moemesh::v1::HeartbeatRequest& heartbeat) const {
  for (int layer : moe_layers_) {
    moemesh::v1::LayerExpertLoad* load = heartbeat.add_expert_load();
    load->set_layer(static_cast<uint32_t>(layer));
    for (int expert = 0; expert < experts_; ++expert) {
      load->add_tokens(routed_tokens(layer, expert));
    }
  }
}

uint64_t AttentionNodeMetrics::routed_tokens(int layer, int expert) const {
  if (layer < 0 || layer >= layers_ || expert < 0 || expert >= experts_) return 0;
  return routed_[static_cast<size_t>(layer) * experts_ + expert].load(std::memory_order_relaxed);
}

}  // namespace moemesh::attention_node
