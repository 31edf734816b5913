#include "core/comm/control_client.h"

#include "core/comm/grpc_status.h"
#include "core/comm/tls.h"
#include "core/obs/log.h"

#include <chrono>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/control.grpc.pb.h"

namespace moemesh::comm {
namespace {

class GrpcControlClient : public ControlClient {
 public:
  GrpcControlClient(ControlClientOptions options, PlacementCallback on_placement,
                    HeartbeatStateCallback heartbeat_state)
      : options_(std::move(options)),
        on_placement_(std::move(on_placement)),
        heartbeat_state_(std::move(heartbeat_state)) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(-1);
    stub_ = moemesh::v1::ControlPlane::NewStub(CreateServiceChannel(options_.router_address, args));
    interval_ = absl::Seconds(options_.heartbeat_interval_seconds);
    thread_ = std::thread([this] { Loop(); });
  }

  ~GrpcControlClient() override { Stop(); }

  std::string node_id() const override {
    absl::MutexLock lock(&mutex_);
    return node_id_;
  }

  moemesh::v1::Placement placement() const override {
    absl::MutexLock lock(&mutex_);
    return placement_;
  }

  absl::StatusOr<moemesh::v1::Placement> RefreshPlacement() override {
    auto placement = Fetch();
    if (placement.ok()) {
      absl::MutexLock lock(&mutex_);
      if (placement->version() > placement_.version()) placement_ = *placement;
      wake_ = true;  // the thread delivers it to on_placement
    }
    return placement;
  }

  absl::StatusOr<moemesh::v1::Placement> FetchTargetPlacement() override {
    return Fetch(/*target=*/true);
  }

  void HeartbeatSoon() override {
    absl::MutexLock lock(&mutex_);
    wake_ = true;
  }

  bool SendHeartbeatAndWait(absl::Duration timeout) override {
    absl::MutexLock lock(&mutex_);
    // The first heartbeat begun after now: its state is filled after the caller's changes.
    const uint64_t wanted = heartbeats_begun_ + 1;
    wake_ = true;
    auto answered = [this, wanted]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return stopping_ || heartbeats_answered_through_ >= wanted;
    };
    mutex_.AwaitWithTimeout(absl::Condition(&answered), timeout);
    return heartbeats_answered_through_ >= wanted;
  }

  ControlClientCounters counters() const override {
    absl::MutexLock lock(&mutex_);
    return counters_;
  }

  void Stop() override {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(
                              static_cast<int64_t>(options_.rpc_timeout_seconds * 1000)));
    return context;
  }

  absl::StatusOr<moemesh::v1::Placement> Fetch(bool target = false) {
    moemesh::v1::Placement placement;
    auto context = Context();
    moemesh::v1::GetPlacementRequest request;
    request.set_target(target);
    grpc::Status status = stub_->GetPlacement(context.get(), request, &placement);
    if (!status.ok()) return FromGrpcStatus(status, "GetPlacement from " + options_.router_address);
    return placement;
  }

  // Waits `duration` or until Stop/RefreshPlacement; returns false when stopping.
  bool Sleep(absl::Duration duration) {
    absl::MutexLock lock(&mutex_);
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_ || wake_; };
    mutex_.AwaitWithTimeout(absl::Condition(&woken), duration);
    wake_ = false;
    return !stopping_;
  }

  bool Register() {
    moemesh::v1::RegisterReply reply;
    auto context = Context();
    moemesh::v1::RegisterRequest request = options_.registration;
    if (options_.registration_state) options_.registration_state(request);
    grpc::Status status = stub_->Register(context.get(), request, &reply);
    if (!status.ok()) {
      // Once per outage, not per retry.
      if (!register_failure_logged_) {
        obs::LogWarn("registration with the control plane failed, retrying kind={} router={} "
                     "error=\"{}\"",
                     KindName(), options_.router_address, status.error_message());
        register_failure_logged_ = true;
      }
      return false;
    }
    register_failure_logged_ = false;
    uint64_t registrations;
    {
      absl::MutexLock lock(&mutex_);
      node_id_ = reply.node_id();
      if (reply.heartbeat_interval_seconds() > 0) {
        interval_ = absl::Seconds(reply.heartbeat_interval_seconds());
      }
      registrations = ++counters_.registrations;
    }
    obs::LogInfo("{} with the control plane node={} kind={} router={} registrations={}",
                 registrations == 1 ? "registered" : "re-registered", reply.node_id(), KindName(),
                 options_.router_address, registrations);
    return true;
  }

  const char* KindName() const {
    return options_.registration.kind() == moemesh::v1::NODE_KIND_EXPERT ? "expert" : "attention";
  }

  void DeliverIfNew() {
    moemesh::v1::Placement placement;
    {
      absl::MutexLock lock(&mutex_);
      if (placement_.version() == delivered_version_) return;
      placement = placement_;
      delivered_version_ = placement.version();
    }
    if (on_placement_) on_placement_(placement);
  }

  void Loop() {
    bool registered = false;
    while (true) {
      {
        absl::MutexLock lock(&mutex_);
        if (stopping_) return;
      }
      if (!registered) {
        registered = Register();
        if (!registered) {
          if (!Sleep(absl::Seconds(options_.register_retry_seconds))) return;
          continue;
        }
      }
      moemesh::v1::HeartbeatRequest request;
      uint64_t heartbeat_number;
      {
        absl::MutexLock lock(&mutex_);
        heartbeat_number = ++heartbeats_begun_;
      }
      if (heartbeat_state_) heartbeat_state_(request);
      absl::Duration interval;
      {
        absl::MutexLock lock(&mutex_);
        request.set_node_id(node_id_);
        interval = interval_;
      }
      moemesh::v1::HeartbeatReply reply;
      auto context = Context();
      grpc::Status status = stub_->Heartbeat(context.get(), request, &reply);
      bool answered = false;
      if (!status.ok()) {
        if (!heartbeat_failure_logged_) {
          obs::LogWarn("control plane lost: heartbeat failed node={} router={} error=\"{}\"",
                       request.node_id(), options_.router_address, status.error_message());
          heartbeat_failure_logged_ = true;
        }
        absl::MutexLock lock(&mutex_);
        ++counters_.heartbeats_failed;
      } else if (!reply.known()) {
        // The router lost us (it restarted): register again at once.
        obs::LogWarn("the control plane does not know this node (router restarted?), rejoining "
                     "node={} router={}",
                     request.node_id(), options_.router_address);
        heartbeat_failure_logged_ = false;
        registered = false;
        continue;
      } else {
        if (heartbeat_failure_logged_) {
          obs::LogInfo("control plane reachable again node={} router={}", request.node_id(),
                       options_.router_address);
          heartbeat_failure_logged_ = false;
        }
        uint64_t known_version;
        {
          absl::MutexLock lock(&mutex_);
          ++counters_.heartbeats_ok;
          heartbeats_answered_through_ = heartbeat_number;
          known_version = placement_.version();
        }
        if (reply.placement_version() != known_version) {
          auto placement = Fetch();
          if (placement.ok()) {
            absl::MutexLock lock(&mutex_);
            // Forward only: a restarted router answers version 0 until it has rebuilt the
            // placement (and then numbers it above what the nodes reported).
            if (placement->version() > placement_.version()) placement_ = *std::move(placement);
            ++counters_.placements_fetched;
          }
        }
        answered = true;
      }
      DeliverIfNew();
      if (answered && options_.on_heartbeat_reply) options_.on_heartbeat_reply(reply);
      if (!Sleep(interval)) return;
      DeliverIfNew();
    }
  }

  const ControlClientOptions options_;
  const PlacementCallback on_placement_;
  const HeartbeatStateCallback heartbeat_state_;
  std::unique_ptr<moemesh::v1::ControlPlane::Stub> stub_;
  mutable absl::Mutex mutex_;
  std::string node_id_ ABSL_GUARDED_BY(mutex_);
  moemesh::v1::Placement placement_ ABSL_GUARDED_BY(mutex_);
  uint64_t delivered_version_ ABSL_GUARDED_BY(mutex_) = 0;
  absl::Duration interval_ ABSL_GUARDED_BY(mutex_);
  ControlClientCounters counters_ ABSL_GUARDED_BY(mutex_);
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  bool wake_ ABSL_GUARDED_BY(mutex_) = false;
  // Heartbeats begun (state filled after the count), and the number of the last one answered.
  uint64_t heartbeats_begun_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t heartbeats_answered_through_ ABSL_GUARDED_BY(mutex_) = 0;
  // Touched by the client's thread only: one log line per outage.
  bool register_failure_logged_ = false;
  bool heartbeat_failure_logged_ = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<ControlClient> ControlClient::Start(ControlClientOptions options,
                                                    PlacementCallback on_placement,
                                                    HeartbeatStateCallback heartbeat_state) {
  return std::make_unique<GrpcControlClient>(std::move(options), std::move(on_placement),
                                             std::move(heartbeat_state));
}

}  // namespace moemesh::comm
