#include "router/attention_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "router/sequence_replay.h"
#include "core/comm/grpc_status.h"
#include "core/comm/tls.h"

namespace moemesh::router {
namespace {

using moemesh::v1::SequenceEvent;

// The cache a node is asked to reserve: the prompt (with the tokens a resubmission recomputes)
// plus a bounded share of the completion; reserving a default max_tokens (the whole context)
// would make every node look full after one request each.
uint64_t ReserveTokens(const moemesh::v1::AddSequenceRequest& request) {
  constexpr uint64_t kReservedDecodeTokens = 512;
  return static_cast<uint64_t>(request.prompt_token_ids_size()) +
         std::min<uint64_t>(request.max_new_tokens(), kReservedDecodeTokens);
}

// A call that ended this way did not fail the sequence itself: the node or the connection went
// away (a process that dies mid-stream shows as UNAVAILABLE, or as UNKNOWN/INTERNAL "stream
// removed"; a node shutting its server down cancels its calls). The others (INVALID_ARGUMENT,
// ALREADY_EXISTS, ...) would fail the same way anywhere.
bool NodeWentAway(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
      return true;
    default:
      return false;
  }
}

}  // namespace

// One sequence: a thread runs attempts (one AddSequence call each) until the sequence finishes,
// is cancelled, fails for a reason of its own, or finds no node to continue on.
class GrpcAttentionBackend::Sequence : public SequenceHandle {
 public:
  Sequence(GrpcAttentionBackend* backend, std::string address,
           moemesh::v1::AddSequenceRequest request, SequenceObserver observer)
      : backend_(backend), replay_(std::move(request)), observer_(std::move(observer)) {
    {
      absl::MutexLock lock(&backend_->mutex_);
      backend_->sequences_.insert(this);
    }
    thread_ = std::thread([this, address = std::move(address)] { Run(address); });
  }

  ~Sequence() override {
    {
      absl::MutexLock lock(&backend_->mutex_);
      backend_->sequences_.erase(this);
    }
    Cancel();
    thread_.join();
  }

  void Cancel() override {
    absl::MutexLock lock(&mutex_);
    if (cancelled_) return;
    cancelled_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }

  // Health watch: gives up the running attempt if its node is in `failed` (it is resubmitted).
  void AbandonIfOn(const std::set<std::string>& failed) {
    absl::MutexLock lock(&mutex_);
    if (context_ == nullptr || abandoned_ || failed.count(address_) == 0) return;
    abandoned_ = true;
    context_->TryCancel();
  }

 private:
  enum class End { kFinished, kCancelled, kFailed, kResubmit };
  struct Outcome {
    End end;
    absl::Status status;  // kFailed: what on_end gets; kResubmit: why the node was left
    std::string reason;   // kResubmit: for GrpcAttentionBackendOptions::on_resubmit
  };

  Outcome Attempt(const std::string& address, const moemesh::v1::AddSequenceRequest& request) {
    moemesh::v1::AttentionService::Stub* stub = backend_->StubFor(address);
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mutex_);
      if (cancelled_) return {End::kCancelled, absl::OkStatus(), ""};
      context_ = &context;
      address_ = address;
      abandoned_ = false;
    }
    std::unique_ptr<grpc::ClientReader<SequenceEvent>> reader = stub->AddSequence(&context, request);
    SequenceEvent event;
    bool finished = false;
    bool handed_back = false;
    while (reader->Read(&event)) {
      if (finished || handed_back) continue;  // nothing follows a last event; drain the stream
      const SequenceReplay::Verdict verdict = replay_.OnEvent(event);
      if (verdict == SequenceReplay::Verdict::kResubmit) {
        handed_back = true;
        if (event.tokens_size() == 0) continue;
      }
      if (verdict == SequenceReplay::Verdict::kFinished) finished = true;
      observer_.on_event(event);
    }
    const grpc::Status status = reader->Finish();
    bool cancelled, abandoned;
    {
      absl::MutexLock lock(&mutex_);
      context_ = nullptr;
      cancelled = cancelled_;
      abandoned = abandoned_;
    }
    if (finished) return {End::kFinished, absl::OkStatus(), ""};
    if (cancelled) return {End::kCancelled, absl::OkStatus(), ""};
    if (handed_back) {
      return {End::kResubmit,
              absl::UnavailableError(absl::StrCat("attention node ", address, " handed it back")),
              "node_drained"};
    }
    if (abandoned) {
      return {End::kResubmit,
              absl::UnavailableError(absl::StrCat("attention node ", address,
                                                  " lost (no heartbeat within the timeout)")),
              "node_unhealthy"};
    }
    if (status.ok()) return {End::kFailed, absl::OkStatus(), ""};  // ended without finishing
    if (NodeWentAway(status)) {
      return {End::kResubmit,
              absl::UnavailableError(absl::StrCat("attention node ", address,
                                                  " unavailable: ", status.error_message())),
              "node_failed"};
    }
    return {End::kFailed,
            comm::FromGrpcStatus(status, absl::StrCat("attention node ", address)), ""};
  }

  // Waits `duration` unless the sequence is cancelled first (then false).
  bool WaitUnlessCancelled(absl::Duration duration) {
    absl::MutexLock lock(&mutex_);
    mutex_.AwaitWithTimeout(absl::Condition(&cancelled_), duration);
    return !cancelled_;
  }

  void Run(std::string address) {
    const GrpcAttentionBackendOptions& options = backend_->options_;
    moemesh::v1::AddSequenceRequest request = replay_.NextAttempt();
    absl::Time give_up = absl::InfiniteFuture();
    std::vector<std::string> avoid;  // nodes that failed since the last delivered token
    int resubmissions = 0;           // since the last delivered token
    absl::Duration backoff;          // before the next try; grows while no token arrives
    while (true) {
      const int64_t delivered_before = replay_.delivered_tokens();
      Outcome outcome = Attempt(address, request);
      if (outcome.end == End::kFinished) return observer_.on_end(absl::OkStatus());
      if (outcome.end == End::kCancelled) {
        return observer_.on_end(absl::CancelledError("cancelled by the router"));
      }
      if (outcome.end == End::kFailed) return observer_.on_end(outcome.status);
      // The node is gone or gave the sequence back: continue it elsewhere.
      if (replay_.delivered_tokens() > delivered_before || give_up == absl::InfiniteFuture()) {
        give_up = absl::Now() + options.failover_timeout;
        avoid.clear();
        resubmissions = 0;
        backoff = absl::ZeroDuration();  // the first try on another node goes at once
      }
      if (std::find(avoid.begin(), avoid.end(), address) == avoid.end()) avoid.push_back(address);
      if (replay_.budget_spent()) {
        // Every token arrived, only the finish reason did not: it can only be LENGTH.
        SequenceEvent last;
        last.set_finish_reason(SequenceEvent::LENGTH);
        replay_.OnEvent(last);
        observer_.on_event(last);
        return observer_.on_end(absl::OkStatus());
      }
      if (++resubmissions > options.max_resubmissions) {
        return Exhausted(outcome.status, outcome.status, resubmissions - 1);
      }
      if (options.on_resubmit) options.on_resubmit(outcome.reason, replay_.delivered_tokens());
      request = replay_.NextAttempt();
      absl::Status last_failure = outcome.status;
      while (true) {
        if (!WaitUnlessCancelled(backoff)) {
          return observer_.on_end(absl::CancelledError("cancelled by the router"));
        }
        backoff = std::min(std::max(2 * backoff, absl::Milliseconds(50)), absl::Seconds(1));
        if (absl::Now() >= give_up) return Exhausted(outcome.status, last_failure, resubmissions);
        absl::StatusOr<std::string> picked = options.pick_node(ReserveTokens(request), avoid);
        // Only nodes that failed this sequence are left: try them again (one may be back).
        if (!picked.ok() && !avoid.empty()) picked = options.pick_node(ReserveTokens(request), {});
        if (picked.ok()) {
          address = *picked;
          break;
        }
        last_failure = picked.status();
      }
    }
  }

  // No node continued the sequence: Unavailable naming the node failure and the last problem
  // (a node failing again, or none to pick).
  void Exhausted(const absl::Status& node_failure, const absl::Status& last_failure,
                 int resubmissions) {
    const GrpcAttentionBackendOptions& options = backend_->options_;
    if (options.on_failover_exhausted) options.on_failover_exhausted();
    std::string message = absl::StrCat(
        "the sequence lost its attention node (", node_failure.message(),
        ") and no other one continued it within ", absl::FormatDuration(options.failover_timeout),
        " (", resubmissions, " resubmissions since its last token)");
    if (last_failure.message() != node_failure.message()) {
      absl::StrAppend(&message, "; last failure: ", last_failure.message());
    }
    observer_.on_end(absl::UnavailableError(message));
  }

  GrpcAttentionBackend* const backend_;
  SequenceReplay replay_;  // the sequence thread only
  SequenceObserver observer_;
  absl::Mutex mutex_;
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  bool abandoned_ ABSL_GUARDED_BY(mutex_) = false;           // the running attempt's node failed
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mutex_) = nullptr;  // of the running attempt
  std::string address_ ABSL_GUARDED_BY(mutex_);             // of the running attempt
  std::thread thread_;  // last: started after the members it uses
};

GrpcAttentionBackend::GrpcAttentionBackend(GrpcAttentionBackendOptions options)
    : options_(std::move(options)), seeds_(std::random_device{}()) {
  if (options_.failed_nodes) health_thread_ = std::thread([this] { WatchHealth(); });
}

GrpcAttentionBackend::~GrpcAttentionBackend() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (health_thread_.joinable()) health_thread_.join();
}

void GrpcAttentionBackend::WatchHealth() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      mutex_.AwaitWithTimeout(absl::Condition(&stopping_), options_.health_poll_interval);
      if (stopping_) return;
    }
    const std::vector<std::string> failed = options_.failed_nodes();
    if (failed.empty()) continue;
    const std::set<std::string> failed_set(failed.begin(), failed.end());
    absl::MutexLock lock(&mutex_);
    for (Sequence* sequence : sequences_) sequence->AbandonIfOn(failed_set);
  }
}

absl::Status GrpcAttentionBackend::Ready() {
  return options_.ready ? options_.ready() : absl::OkStatus();
}

moemesh::v1::AttentionService::Stub* GrpcAttentionBackend::StubFor(const std::string& address) {
  absl::MutexLock lock(&mutex_);
  auto& stub = stubs_[address];
  if (!stub) {
    stub = moemesh::v1::AttentionService::NewStub(comm::CreateServiceChannel(address));
  }
  return stub.get();
}

absl::StatusOr<std::unique_ptr<SequenceHandle>> GrpcAttentionBackend::AddSequence(
    const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) {
  if (options_.check_experts) {
    if (absl::Status status = options_.check_experts(); !status.ok()) return status;
  }
  if (!options_.pick_node) return absl::UnavailableError("no attention node is known");
  absl::StatusOr<std::string> address = options_.pick_node(ReserveTokens(request), {});
  if (!address.ok()) return address.status();
  moemesh::v1::AddSequenceRequest seeded = request;
  if (!seeded.sampling().has_seed()) {
    // The router's choice, kept for the whole sequence: a resubmission draws the same tokens.
    absl::MutexLock lock(&mutex_);
    seeded.mutable_sampling()->set_has_seed(true);
    seeded.mutable_sampling()->set_seed(seeds_());
  }
  return std::unique_ptr<SequenceHandle>(
      new Sequence(this, *std::move(address), std::move(seeded), std::move(observer)));
}

}  // namespace moemesh::router
