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
  auto& shared_memory = registry_->Counter(
      "moemesh_dispatch_shared_memory_total",
      "Dispatches sent to expert nodes through a shared-memory mailbox (nodes on this host; the "
      "others go over the gRPC stream).");
  prometheus::Counter* shared_memory_counter = &shared_memory.Add({});
  prometheus::Counter* sent_counter = &bytes_sent.Add({});
  prometheus::Counter* received_counter = &bytes_received.Add({});
  auto& failovers = registry_->Counter(
      "moemesh_dispatch_failovers_total",
      "Dispatches to one expert node that failed over to another replica or a later try, by "
      "reason: unreachable (broken stream, refused connection, no reply within the dispatch "
      "deadline: the node is suspected at once) or not_held (placement lag).");
  prometheus::Counter* failovers_unreachable = &failovers.Add({{"reason", "unreachable"}});
  prometheus::Counter* failovers_not_held = &failovers.Add({{"reason", "not_held"}});
  prometheus::Counter* redispatched_rows =
      &registry_->Counter("moemesh_dispatch_redispatched_rows_total",
                          "(row, expert) pairs sent again to another replica after a failover.")
           .Add({});
  prometheus::Counter* dispatch_failures =
      &registry_->Counter("moemesh_dispatch_layer_failures_total",
                          "MoE layers whose dispatch failed after every retry and the recovery "
                          "wait (the step's sequences fail).")
           .Add({});
  prometheus::Counter* detection_sum =
      &registry_->Counter("moemesh_dispatch_failure_detection_seconds_total",
                          "Summed over unreachable failovers: layer dispatch start -> failure "
                          "seen (divide by the unreachable failovers for the mean).")
           .Add({});
  prometheus::Gauge* detection_max =
      &registry_->Gauge("moemesh_dispatch_failure_detection_seconds_max",
                        "Longest layer dispatch start -> failure seen of any unreachable "
                        "failover since the node started.")
           .Add({});
  prometheus::Counter* recovery_waits =
      &registry_->Counter("moemesh_dispatch_recovery_waits_total",
                          "MoE layers that waited for an expert without a live replica to be "
                          "re-placed by the router.")
           .Add({});
  prometheus::Counter* recovery_wait_seconds =
      &registry_->Counter("moemesh_dispatch_recovery_wait_seconds_total",
                          "Time MoE layers spent waiting for re-placed experts.")
           .Add({});
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
      if (counters.shared_memory_dispatches > watched->shared_memory_dispatches) {
        shared_memory_counter->Increment(static_cast<double>(
            counters.shared_memory_dispatches - watched->shared_memory_dispatches));
        watched->shared_memory_dispatches = counters.shared_memory_dispatches;
      }
      if (counters.bytes_received > watched->bytes_received) {
        received_counter->Increment(
            static_cast<double>(counters.bytes_received - watched->bytes_received));
        watched->bytes_received = counters.bytes_received;
      }
    }
    if (watched->dispatch) {
      const DispatchStatistics now = watched->dispatch();
      const DispatchStatistics seen = watched->dispatch_seen;
      // The statistics are cumulative: each counter advances by what is new since the last
      // scrape.
      auto advance = [](prometheus::Counter* counter, double value, double before) {
        if (value > before) counter->Increment(value - before);
      };
      advance(failovers_unreachable, now.failovers_unreachable, seen.failovers_unreachable);
      advance(failovers_not_held, now.failovers_not_held, seen.failovers_not_held);
      advance(redispatched_rows, now.redispatched_rows, seen.redispatched_rows);
      advance(dispatch_failures, now.failures, seen.failures);
      advance(recovery_waits, now.recovery_waits, seen.recovery_waits);
      advance(detection_sum, now.detection_seconds_sum, seen.detection_seconds_sum);
      advance(recovery_wait_seconds, now.recovery_wait_seconds, seen.recovery_wait_seconds);
      watched->dispatch_seen = now;
      detection_max->Set(now.detection_seconds_max);
    }
  });
}

AttentionNodeMetrics::~AttentionNodeMetrics() {
  absl::MutexLock lock(&watched_->mutex);
  watched_->scheduler = nullptr;
  watched_->transport = nullptr;
  watched_->dispatch = nullptr;
}

void AttentionNodeMetrics::AddLane(int lane, TimedRoutedExperts* experts) {
  absl::MutexLock lock(&mutex_);
  lanes_[lane] = experts;
}

void AttentionNodeMetrics::Watch(const Scheduler* scheduler,
                                 const comm::GrpcExpertTransport* transport,
                                 std::function<DispatchStatistics()> dispatch) {
  absl::MutexLock lock(&watched_->mutex);
  watched_->scheduler = scheduler;
  watched_->transport = transport;
  watched_->dispatch = std::move(dispatch);
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
