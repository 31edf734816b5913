#include "attention_node/attention_service.h"

#include "absl/strings/str_cat.h"
#include "core/comm/grpc_expert_transport.h"
#include "core/comm/grpc_server.h"
#include "core/status_macros.h"

namespace moemesh::attention_node {

grpc::Status AttentionServiceImpl::AddSequence(
    grpc::ServerContext* context, const moemesh::v1::AddSequenceRequest* request,
    grpc::ServerWriter<moemesh::v1::SequenceEvent>* writer) {
  if (request->sequence_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sequence_id is empty");
  }
  ++open_streams_;
  struct Closed {
    std::atomic<int>& open;
    ~Closed() { --open; }
  } closed{open_streams_};
  if (!admitting_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "attention node draining: it admits no new sequences");
  }
  auto events = std::make_shared<EventQueue>();
  if (absl::Status status = scheduler_->Add(*request, events); !status.ok()) {
    const grpc::StatusCode code = status.code() == absl::StatusCode::kAlreadyExists
                                      ? grpc::StatusCode::ALREADY_EXISTS
                                  : status.code() == absl::StatusCode::kUnavailable
                                      ? grpc::StatusCode::UNAVAILABLE
                                      : grpc::StatusCode::INVALID_ARGUMENT;
    return grpc::Status(code, std::string(status.message()));
  }
  while (true) {
    std::optional<moemesh::v1::SequenceEvent> event = events->Pop(/*timeout_ms=*/50);
    if (context->IsCancelled()) {
      scheduler_->Abort(request->sequence_id());
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled; sequence aborted");
    }
    const bool last =
        event.has_value() && event->finish_reason() != moemesh::v1::SequenceEvent::NOT_FINISHED;
    if (!last && handing_over_.load()) {
      // Draining and out of time: the router continues the sequence elsewhere from the tokens
      // it received (a token popped here and not written is recomputed there, identically).
      scheduler_->Abort(request->sequence_id());
      moemesh::v1::SequenceEvent handed;
      handed.set_finish_reason(moemesh::v1::SequenceEvent::HANDED_OVER);
      writer->Write(handed);
      return grpc::Status::OK;
    }
    if (!event.has_value()) continue;
    if (!writer->Write(*event)) {
      scheduler_->Abort(request->sequence_id());
      return grpc::Status(grpc::StatusCode::CANCELLED, "stream broken; sequence aborted");
    }
    if (last) return grpc::Status::OK;
  }
}

grpc::Status AttentionServiceImpl::Abort(grpc::ServerContext*, const moemesh::v1::AbortRequest* request,
                                         moemesh::v1::AbortReply* reply) {
  reply->set_found(scheduler_->Abort(request->sequence_id()));
  return grpc::Status::OK;
}

grpc::Status AttentionServiceImpl::GetStatus(grpc::ServerContext*,
                                             const moemesh::v1::NodeStatusRequest*,
                                             moemesh::v1::NodeStatus* reply) {
  const SchedulerStatus status = scheduler_->Status();
  reply->set_cache_capacity_tokens(static_cast<uint64_t>(status.cache_capacity_tokens));
  reply->set_cache_used_tokens(static_cast<uint64_t>(status.cache_used_tokens));
  reply->set_running_sequences(static_cast<uint32_t>(status.running));
  reply->set_waiting_sequences(static_cast<uint32_t>(status.waiting));
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<AttentionNode>> AttentionNode::Start(AttentionNodeOptions options) {
  std::unique_ptr<AttentionNode> node(new AttentionNode());
  node->options_ = options;
  ASSIGN_OR_RETURN(node->checkpoint_, checkpoint::Checkpoint::Open(options.model_dir));
  ASSIGN_OR_RETURN(node->model_, model::DeepseekModel::Load(*node->checkpoint_));
  const int64_t blocks = (options.cache_tokens + options.cache_block_size - 1) / options.cache_block_size;
  auto pool = node->model_->NewBlockPool(std::max<int64_t>(1, blocks), options.cache_block_size);

  comm::GrpcExpertTransportOptions transport_options;
  transport_options.dispatch_deadline = absl::Seconds(options.dispatch_timeout_seconds);
  transport_options.dispatch_deadline_floor =
      absl::Seconds(std::min(options.dispatch_timeout_floor_seconds,
                             options.dispatch_timeout_seconds));
  transport_options.shared_memory = options.shared_memory_dispatch;
  SchedulerOptions scheduler_options = options.scheduler;
  if (options.metrics != nullptr) {
    node->metrics_ =
        std::make_unique<AttentionNodeMetrics>(options.metrics, node->model_->config());
    AttentionNodeMetrics* metrics = node->metrics_.get();
    transport_options.on_round_trip = [metrics](const std::string& node_id, double seconds,
                                                bool ok) {
      metrics->OnRoundTrip(node_id, seconds, ok);
    };
    scheduler_options.observer = metrics;
  }
  node->transport_ = std::make_unique<comm::GrpcExpertTransport>(transport_options);
  AttentionNode* raw = node.get();
  const int hidden_size = node->model_->config().hidden_size;
  const std::vector<int> moe_layers = node->model_->config().MoeLayers();
  const int last_moe_layer = moe_layers.empty() ? -1 : moe_layers.back();
  node->scheduler_ = std::make_unique<Scheduler>(
      node->model_.get(), pool,
      [raw, hidden_size, last_moe_layer](int lane) {
        auto experts = std::make_unique<RemoteRoutedExperts>(
            raw->transport_.get(), &raw->placement_, lane, hidden_size,
            [raw] { raw->RefreshPlacement(); }, last_moe_layer);
        experts->set_recovery_timeout(
            absl::Seconds(raw->options_.expert_recovery_timeout_seconds));
        raw->lanes_.push_back(experts.get());
        if (raw->metrics_ == nullptr) return std::unique_ptr<model::RoutedExperts>(std::move(experts));
        auto timed = std::make_unique<TimedRoutedExperts>(std::move(experts));
        raw->metrics_->AddLane(lane, timed.get());
        return std::unique_ptr<model::RoutedExperts>(std::move(timed));
      },
      scheduler_options);
  if (node->metrics_ != nullptr) {
    node->metrics_->Watch(node->scheduler_.get(),
                          static_cast<const comm::GrpcExpertTransport*>(node->transport_.get()),
                          [raw] { return raw->dispatch_statistics(); });
  }

  node->service_ = std::make_unique<AttentionServiceImpl>(node->scheduler_.get());
  node->server_ = comm::StartGrpcServer(absl::StrCat(options.host, ":", options.port),
                                        {node->service_.get()}, &node->port_,
                                        comm::kAttentionMaxMessageBytes);
  if (node->server_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port));
  }

  comm::ControlClientOptions control;
  control.router_address = options.router_address;
  control.registration.set_kind(moemesh::v1::NODE_KIND_ATTENTION);
  control.registration.set_address(node->address());
  control.registration.set_preferred_id(options.node_name);
  control.registration.set_metrics_address(options.metrics_address);
  control.registration.set_cache_capacity_tokens(static_cast<uint64_t>(blocks * options.cache_block_size));
  // Registering again (the router restarted): the router numbers its placements above the one
  // this node dispatches with, so that it takes them as newer.
  control.registration_state = [raw](moemesh::v1::RegisterRequest& request) {
    request.set_placement_version(raw->placement_.Snapshot()->version);
  };
  node->control_ = comm::ControlClient::Start(
      control, [raw](const moemesh::v1::Placement& placement) { raw->placement_.Update(placement); },
      [raw](moemesh::v1::HeartbeatRequest& heartbeat) {
        const SchedulerStatus status = raw->scheduler_->Status();
        heartbeat.set_cache_capacity_tokens(static_cast<uint64_t>(status.cache_capacity_tokens));
        heartbeat.set_cache_free_tokens(
            static_cast<uint64_t>(status.cache_capacity_tokens - status.cache_used_tokens));
        heartbeat.set_running_sequences(static_cast<uint32_t>(status.running));
        heartbeat.set_waiting_sequences(static_cast<uint32_t>(status.waiting));
        heartbeat.set_used_placement_version(raw->placement_.UsedVersion());
        heartbeat.set_draining(raw->draining_.load());
        if (raw->metrics_ != nullptr) raw->metrics_->FillHeartbeat(heartbeat);
      });
  node->control_for_refresh_.store(node->control_.get());
  return node;
}

AttentionNode::~AttentionNode() {
  Shutdown();
  // The metrics (and their registry's refresh callback, which a scrape can run at any time)
  // outlive the scheduler and transport destroyed next: stop them reading both first.
  if (metrics_ != nullptr) metrics_->Watch(nullptr, nullptr);
}

void AttentionNode::RefreshPlacement() {
  comm::ControlClient* control = control_for_refresh_.load();
  if (control == nullptr) return;
  absl::StatusOr<moemesh::v1::Placement> placement = control->RefreshPlacement();
  if (placement.ok()) placement_.Update(*placement);
}

std::string AttentionNode::address() const { return absl::StrCat(options_.host, ":", port_); }

DispatchStatistics AttentionNode::dispatch_statistics() const {
  DispatchStatistics total;
  for (const RemoteRoutedExperts* lane : lanes_) {
    const DispatchStatistics statistics = lane->statistics();
    total.layer_dispatches += statistics.layer_dispatches;
    total.node_round_trips += statistics.node_round_trips;
    total.round_trip_seconds += statistics.round_trip_seconds;
    total.failures += statistics.failures;
    total.redispatches += statistics.redispatches;
    total.redispatched_rows += statistics.redispatched_rows;
    total.failovers_unreachable += statistics.failovers_unreachable;
    total.failovers_not_held += statistics.failovers_not_held;
    total.detection_seconds_sum += statistics.detection_seconds_sum;
    total.detection_seconds_max =
        std::max(total.detection_seconds_max, statistics.detection_seconds_max);
    total.recovery_waits += statistics.recovery_waits;
    total.recovery_wait_seconds += statistics.recovery_wait_seconds;
  }
  return total;
}

int AttentionNode::Drain(absl::Duration timeout, absl::Duration handover_timeout) {
  draining_.store(true);
  // Tell the router now, not at the next heartbeat: it must stop sending new sequences here
  // (which would be refused and resubmitted) even when the running ones finish sooner than that.
  // Bounded: an unreachable router does not hold the drain up.
  if (control_ != nullptr) control_->SendHeartbeatAndWait(absl::Seconds(2));
  if (service_ == nullptr) {
    Shutdown();
    return 0;
  }
  service_->StopAdmitting();
  auto wait_for_streams = [this](absl::Duration limit) {
    const absl::Time deadline = absl::Now() + limit;
    while (service_->open_streams() > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
  };
  wait_for_streams(timeout);
  const int handed_over = service_->open_streams();
  if (handed_over > 0) {
    service_->HandOver();
    wait_for_streams(handover_timeout);
  }
  Shutdown();
  return handed_over;
}

void AttentionNode::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  control_for_refresh_.store(nullptr);
  if (control_ != nullptr) control_->Stop();
  if (scheduler_ != nullptr) scheduler_->Stop();
  if (server_ != nullptr) comm::ShutdownGrpcServer(server_.get(), 1.0);
}

}  // namespace moemesh::attention_node
