#include "core/comm/grpc_expert_transport.h"

#include "core/comm/tls.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/comm/dispatch_codec.h"
#include "core/comm/round_trip_deadline.h"
#include "core/comm/shm_expert_dispatch.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/expert.grpc.pb.h"

namespace moemesh::comm {
namespace {

using Result = absl::StatusOr<DispatchResult>;

}  // namespace

grpc::ChannelArguments ExpertChannelArguments(const GrpcExpertTransportOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  const int max_backoff_ms =
      std::max<int>(100, static_cast<int>(absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(100, max_backoff_ms));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(100, max_backoff_ms));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff_ms);
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // an idle stream keeps pinging
  }
  return args;
}

// One ExpertService.Dispatch stream to one node on one lane, with its own channel (a fresh
// connection per stream, so a restarted node is reached without inheriting backoff state).
class GrpcExpertTransport::Stream {
 public:
  Stream(GrpcExpertTransport* owner, std::string node_id, std::string address, int lane)
      : owner_(owner),
        node_id_(std::move(node_id)),
        address_(std::move(address)),
        lane_(lane),
        deadline_(owner->options_.dispatch_deadline_floor, owner->options_.dispatch_deadline) {
    auto channel = CreateServiceChannel(address_, ExpertChannelArguments(owner->options_));
    stub_ = moemesh::v1::ExpertService::NewStub(channel);
    // Corked: the constructor of the stream does not wait for the connection; the first Write
    // does, bounded by the dispatch deadline (the watchdog cancels the call).
    context_.set_initial_metadata_corked(true);
    stream_ = stub_->Dispatch(&context_);
    reader_ = std::thread([this] { ReaderLoop(); });
    writer_ = std::thread([this] { WriterLoop(); });
  }

  ~Stream() {
    context_.TryCancel();
    {
      absl::MutexLock lock(&outbox_mutex_);
      closing_ = true;
    }
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
  }

  const std::string& address() const { return address_; }

  bool broken() const {
    absl::MutexLock lock(&mutex_);
    return broken_;
  }

  // Registers the dispatch and queues its request for the writer thread; returns at once (a
  // synchronous gRPC Write takes ~0.4 ms on a busy machine, and the caller has the shared expert
  // to compute meanwhile).
  std::future<Result> Send(DispatchBatch batch) {
    absl::MutexLock queue_lock(&outbox_mutex_);  // keeps the lane's write order = call order
    uint64_t id = 0;
    std::future<Result> future;
    {
      absl::MutexLock lock(&mutex_);
      if (broken_) return ResolvedDispatch(absl::UnavailableError(Describe("stream is broken")));
      id = next_id_++;
      Pending& pending = pending_[id];
      pending.shape = ShapeOf(batch);
      pending.limit = deadline_.Next();
      pending.deadline = absl::Now() + pending.limit;
      pending.sent = absl::Now();
      future = pending.promise.get_future();
    }
    moemesh::v1::DispatchRequest request = DispatchRequestFromBatch(std::move(batch), id);
    const size_t bytes = request.ByteSizeLong();
    owner_->Count([&](ExpertTransportCounters& c) {
      ++c.dispatches;
      c.bytes_sent += bytes;
    });
    outbox_.push_back(std::move(request));
    return future;
  }

  // Fails dispatches past their deadline (and, the lane being ordered, the whole stream).
  void Expire(absl::Time now) {
    uint64_t late_id = 0;
    int layer = 0;
    absl::Duration limit;
    {
      absl::MutexLock lock(&mutex_);
      for (const auto& [id, pending] : pending_) {
        if (pending.deadline <= now) {
          late_id = id;
          layer = pending.shape.layer;
          limit = pending.limit;
          break;
        }
      }
    }
    if (late_id == 0) return;
    owner_->Count([](ExpertTransportCounters& c) { ++c.deadline_exceeded; });
    Break(absl::UnavailableError(
        Describe(absl::StrCat("no reply to dispatch ", late_id, " (layer ", layer, ") within ",
                              absl::FormatDuration(limit)))));
  }

 private:
  struct Pending {
    std::promise<Result> promise;
    DispatchShape shape;  // what the reply must match
    absl::Time deadline;
    absl::Duration limit;  // deadline - write time
    absl::Time sent;
  };

  std::string Describe(absl::string_view what) const {
    return absl::StrCat("expert node ", node_id_, " (", address_, ", lane ", lane_, "): ", what);
  }

  // Marks the stream broken, fails every pending dispatch with `status`, cancels the call.
  void Break(const absl::Status& status) {
    std::map<uint64_t, Pending> failed;
    {
      absl::MutexLock lock(&mutex_);
      broken_ = true;
      failed.swap(pending_);
    }
    if (!failed.empty()) {
      owner_->Count([&](ExpertTransportCounters& c) { c.unavailable += failed.size(); });
    }
    for (auto& [id, pending] : failed) pending.promise.set_value(status);
    context_.TryCancel();
  }

  // Writes the queued requests in order. A failed Write means the call is over (node gone or
  // cancelled): every pending dispatch fails, and later requests are dropped unwritten.
  void WriterLoop() {
    bool call_over = false;
    for (;;) {
      moemesh::v1::DispatchRequest request;
      {
        absl::MutexLock lock(&outbox_mutex_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(outbox_mutex_) {
          return closing_ || !outbox_.empty();
        };
        outbox_mutex_.Await(absl::Condition(&ready));
        if (closing_) return;
        request = std::move(outbox_.front());
        outbox_.pop_front();
      }
      if (call_over) continue;  // (its dispatch was failed with the others by Break)
      {
        absl::MutexLock write_lock(&write_mutex_);
        call_over = finished_ || !stream_->Write(request);
      }
      if (call_over) Break(absl::UnavailableError(Describe("stream closed while sending")));
    }
  }

  void ReaderLoop() {
    moemesh::v1::DispatchReply reply;
    while (stream_->Read(&reply)) {
      std::optional<Pending> pending;
      {
        absl::MutexLock lock(&mutex_);
        auto it = pending_.find(reply.dispatch_id());
        if (it == pending_.end()) continue;  // already failed (deadline); drop the late reply
        pending.emplace(std::move(it->second));
        pending_.erase(it);
      }
      const size_t bytes = reply.ByteSizeLong();
      Result result = DispatchResultFromReply(reply, pending->shape, Describe(""));
      owner_->Count([&](ExpertTransportCounters& c) { c.CountReply(result.status(), bytes); });
      const absl::Duration round_trip = absl::Now() - pending->sent;
      if (result.ok()) {
        absl::MutexLock lock(&mutex_);
        deadline_.Observe(round_trip);
      }
      if (owner_->options_.on_round_trip) {
        owner_->options_.on_round_trip(node_id_, absl::ToDoubleSeconds(round_trip), result.ok());
      }
      pending->promise.set_value(std::move(result));
    }
    grpc::Status status;
    {
      // A writer blocked on this call returns promptly now that the call is over.
      absl::MutexLock write_lock(&write_mutex_);
      status = stream_->Finish();
      finished_ = true;
    }
    Break(absl::UnavailableError(Describe(absl::StrCat(
        "stream closed: ", status.ok() ? std::string("by the node") : status.error_message()))));
  }

  GrpcExpertTransport* const owner_;
  const std::string node_id_;
  const std::string address_;
  const int lane_;
  std::unique_ptr<moemesh::v1::ExpertService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<moemesh::v1::DispatchRequest, moemesh::v1::DispatchReply>>
      stream_;
  // Requests waiting for the writer thread, in dispatch id order.
  absl::Mutex outbox_mutex_;
  std::deque<moemesh::v1::DispatchRequest> outbox_ ABSL_GUARDED_BY(outbox_mutex_);
  bool closing_ ABSL_GUARDED_BY(outbox_mutex_) = false;
  // Held around each Write and the Finish (never both at once on the call).
  absl::Mutex write_mutex_;
  bool finished_ ABSL_GUARDED_BY(write_mutex_) = false;
  mutable absl::Mutex mutex_;
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_id_ ABSL_GUARDED_BY(mutex_) = 1;
  bool broken_ ABSL_GUARDED_BY(mutex_) = false;
  RoundTripDeadline deadline_ ABSL_GUARDED_BY(mutex_);
  std::thread reader_;
  std::thread writer_;
};

void ExpertTransportCounters::CountReply(const absl::Status& result, uint64_t bytes) {
  bytes_received += bytes;
  if (result.ok()) {
    ++ok;
  } else if (absl::IsFailedPrecondition(result)) {
    ++not_held;
  } else if (absl::IsInvalidArgument(result)) {
    ++invalid;
  } else {
    ++unavailable;
  }
}

void ExpertTransportCounters::Add(const ExpertTransportCounters& other) {
  dispatches += other.dispatches;
  ok += other.ok;
  unavailable += other.unavailable;
  deadline_exceeded += other.deadline_exceeded;
  not_held += other.not_held;
  invalid += other.invalid;
  reconnects += other.reconnects;
  shared_memory_dispatches += other.shared_memory_dispatches;
  bytes_sent += other.bytes_sent;
  bytes_received += other.bytes_received;
}

GrpcExpertTransport::GrpcExpertTransport(GrpcExpertTransportOptions options)
    : options_(std::move(options)) {
  if (options_.shared_memory) {
    SharedMemoryDispatchOptions shared_memory;
    shared_memory.dispatch_deadline = options_.dispatch_deadline;
    shared_memory.dispatch_deadline_floor = options_.dispatch_deadline_floor;
    shared_memory.on_round_trip = options_.on_round_trip;
    shared_memory.channel_arguments = ExpertChannelArguments(options_);
    // A first attach includes connecting (TLS): at least 2 s, never past the dispatch deadline.
    shared_memory.attach_timeout = std::min(
        std::max(options_.dispatch_deadline_floor, absl::Seconds(2)), options_.dispatch_deadline);
    shared_memory_ = std::make_unique<SharedMemoryDispatch>(std::move(shared_memory));
  }
  watchdog_ = std::thread([this] { WatchdogLoop(); });
}

GrpcExpertTransport::~GrpcExpertTransport() {
  std::map<std::pair<std::string, int>, std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
    streams.swap(streams_);
  }
  if (watchdog_.joinable()) watchdog_.join();
  streams.clear();  // cancels the calls; pending dispatches fail with UNAVAILABLE
  shared_memory_.reset();
}

void GrpcExpertTransport::Count(const std::function<void(ExpertTransportCounters&)>& update) {
  absl::MutexLock lock(&counters_mutex_);
  update(counters_);
}

ExpertTransportCounters GrpcExpertTransport::counters() const {
  ExpertTransportCounters counters;
  {
    absl::MutexLock lock(&counters_mutex_);
    counters = counters_;
  }
  if (shared_memory_ != nullptr) shared_memory_->AddCounters(counters);
  return counters;
}

std::future<Result> GrpcExpertTransport::Dispatch(const std::string& node_id,
                                                  const std::string& address, int lane,
                                                  DispatchBatch batch) {
  if (batch.hidden_size <= 0 || batch.hidden.size() % batch.hidden_size != 0) {
    return ResolvedDispatch(absl::InvalidArgumentError(
        absl::StrCat("dispatch to expert node ", node_id, ": hidden has ", batch.hidden.size(),
                     " values, not a multiple of hidden_size ", batch.hidden_size)));
  }
  if (shared_memory_ != nullptr) {
    std::optional<std::future<Result>> local = shared_memory_->Dispatch(node_id, address, batch);
    if (local.has_value()) return *std::move(local);
  }
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Stream> replaced;
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_) {
      return ResolvedDispatch(absl::UnavailableError("expert transport is shutting down"));
    }
    const auto key = std::make_pair(node_id, lane);
    std::shared_ptr<Stream>& slot = streams_[key];
    if (slot == nullptr || slot->broken() || slot->address() != address) {
      replaced = std::move(slot);
      slot = std::make_shared<Stream>(this, node_id, address, lane);
      if (opened_[key]++ > 0) Count([](ExpertTransportCounters& c) { ++c.reconnects; });
    }
    stream = slot;
  }
  replaced.reset();  // outside the lock: joins the old stream's reader
  return stream->Send(std::move(batch));
}

void GrpcExpertTransport::Forget(const std::string& node_id) {
  if (shared_memory_ != nullptr) shared_memory_->Forget(node_id);
  std::vector<std::shared_ptr<Stream>> dropped;
  {
    absl::MutexLock lock(&mutex_);
    for (auto it = streams_.begin(); it != streams_.end();) {
      if (it->first.first == node_id) {
        dropped.push_back(std::move(it->second));
        it = streams_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void GrpcExpertTransport::WatchdogLoop() {
  const absl::Duration period =
      std::clamp(options_.dispatch_deadline / 20, absl::Milliseconds(5), absl::Milliseconds(100));
  while (true) {
    std::vector<std::shared_ptr<Stream>> streams;
    {
      absl::MutexLock lock(&mutex_);
      mutex_.AwaitWithTimeout(absl::Condition(&stopping_), period);
      if (stopping_) return;
      for (const auto& [key, stream] : streams_) streams.push_back(stream);
    }
    const absl::Time now = absl::Now();
    for (const auto& stream : streams) stream->Expire(now);
  }
}

}  // namespace moemesh::comm
