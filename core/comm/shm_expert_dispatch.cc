#include "core/comm/shm_expert_dispatch.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/comm/dispatch_codec.h"
#include "core/comm/grpc_expert_transport.h"
#include "core/comm/grpc_status.h"
#include "core/comm/round_trip_deadline.h"
#include "core/comm/shm_mailbox.h"
#include "core/comm/tls.h"
#include "core/obs/log.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/expert.grpc.pb.h"

namespace moemesh::comm {
namespace {

using Result = absl::StatusOr<DispatchResult>;

// Room for a reply's fields besides the floats (codes, versions, an error naming experts).
constexpr size_t kReplyOverheadBytes = 64 * 1024;

// Attach failures after which the node is reached over the stream for good: it cannot open this
// process's segments (another host or IPC namespace), does not know the call (an older node) or
// refused the segment. Anything else (unreachable, timed out, /dev/shm full here, a transient
// gRPC error) sends that dispatch over the stream and shared memory is tried again after
// kRetryAttachAfter.
bool MeansStreamOnly(const absl::Status& status) {
  return absl::IsNotFound(status) || absl::IsUnimplemented(status) ||
         absl::IsFailedPrecondition(status) || absl::IsInvalidArgument(status) ||
         absl::IsPermissionDenied(status);
}

constexpr absl::Duration kRetryAttachAfter = absl::Seconds(5);
// Idle mailboxes kept per node (each is reserved tmpfs memory and a parked handler thread on the
// node); more are closed when their dispatch ends.
constexpr size_t kMaxIdlePerNode = 4;

// Bytes a request for `batch` takes at most (the floats, each slice's indices and weights as
// packed varints and floats, and the fixed fields).
size_t RequestBytesBound(const DispatchBatch& batch) {
  size_t bytes = batch.hidden.size() * sizeof(float) + 256;
  for (const ExpertSliceRows& slice : batch.slices) bytes += 32 + slice.rows.size() * 9;
  return bytes;
}

}  // namespace

// One mailbox and the ServeSharedMemory call that keeps it served.
struct SharedMemoryDispatch::Attached {
  std::unique_ptr<MailboxClient> mailbox;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<moemesh::v1::SharedMemoryEvent>> reader;

  ~Attached() {
    mailbox.reset();  // closed: the node's handler returns
    if (context != nullptr) context->TryCancel();
    if (reader != nullptr) reader->Finish();
  }
};

struct SharedMemoryDispatch::Node {
  Node(std::string address, const SharedMemoryDispatchOptions& options)
      : address(std::move(address)),
        deadline(options.dispatch_deadline_floor, options.dispatch_deadline) {}
  const std::string address;
  std::unique_ptr<moemesh::v1::ExpertService::Stub> stub;
  bool stream_only = false;
  absl::Time retry_after = absl::InfinitePast();  // after a transient attach failure
  std::vector<std::unique_ptr<Attached>> idle;
  RoundTripDeadline deadline;
};

// What the futures still out share with the dispatcher (they may outlive it).
struct SharedMemoryDispatch::Shared {
  explicit Shared(SharedMemoryDispatchOptions options) : options(std::move(options)) {}

  void Count(const std::function<void(ExpertTransportCounters&)>& update) {
    absl::MutexLock lock(&counters_mutex);
    update(counters);
  }

  // A new mailbox of `capacity` bytes, served by node `node_id`. Errors: see MeansStreamOnly;
  // otherwise the call's status (UNAVAILABLE, DEADLINE_EXCEEDED...).
  absl::StatusOr<std::unique_ptr<Attached>> Attach(Node& node, size_t capacity) {
    absl::StatusOr<std::unique_ptr<MailboxClient>> mailbox = MailboxClient::Create(capacity);
    if (!mailbox.ok()) return mailbox.status();
    moemesh::v1::ExpertService::Stub* stub;
    {
      absl::MutexLock lock(&mutex);
      if (node.stub == nullptr) {
        node.stub = moemesh::v1::ExpertService::NewStub(
            CreateServiceChannel(node.address, options.channel_arguments));
      }
      stub = node.stub.get();
    }
    auto attached = std::make_unique<Attached>();
    attached->mailbox = *std::move(mailbox);
    attached->context = std::make_unique<grpc::ClientContext>();
    moemesh::v1::AttachSharedMemoryRequest request;
    request.set_segment_name(attached->mailbox->name());
    request.set_nonce(attached->mailbox->nonce());
    attached->reader = stub->ServeSharedMemory(attached->context.get(), request);
    // The node's first event says it serves the mailbox; bounded by attach_timeout.
    grpc::ClientReader<moemesh::v1::SharedMemoryEvent>* reader = attached->reader.get();
    std::future<bool> first = std::async(std::launch::async, [reader] {
      moemesh::v1::SharedMemoryEvent event;
      return reader->Read(&event) && event.attached();
    });
    const bool in_time = first.wait_for(absl::ToChronoNanoseconds(options.attach_timeout)) ==
                         std::future_status::ready;
    if (!in_time) attached->context->TryCancel();
    if (!first.get() || !in_time) {  // (late: the call is cancelled whatever Read returned)
      grpc::Status status = attached->reader->Finish();
      attached->reader.reset();
      if (!in_time) {
        return absl::DeadlineExceededError(absl::StrCat(
            "no answer to ServeSharedMemory within ", absl::FormatDuration(options.attach_timeout)));
      }
      if (status.ok()) return absl::InternalError("the node ended the call without attaching");
      return FromGrpcStatus(status, "ServeSharedMemory");
    }
    attached->mailbox->Unlink();  // both sides have it mapped: nothing is left in /dev/shm
    return attached;
  }

  const SharedMemoryDispatchOptions options;
  absl::Mutex mutex;
  std::map<std::string, std::shared_ptr<Node>> nodes ABSL_GUARDED_BY(mutex);
  uint64_t next_id ABSL_GUARDED_BY(mutex) = 1;
  absl::Mutex counters_mutex;
  ExpertTransportCounters counters ABSL_GUARDED_BY(counters_mutex);
};

SharedMemoryDispatch::SharedMemoryDispatch(SharedMemoryDispatchOptions options)
    : shared_(std::make_shared<Shared>(std::move(options))) {}

SharedMemoryDispatch::~SharedMemoryDispatch() {
  std::map<std::string, std::shared_ptr<Node>> nodes;
  {
    absl::MutexLock lock(&shared_->mutex);
    nodes.swap(shared_->nodes);
  }
}

void SharedMemoryDispatch::Forget(const std::string& node_id) {
  std::shared_ptr<Node> node;
  absl::MutexLock lock(&shared_->mutex);
  auto it = shared_->nodes.find(node_id);
  if (it == shared_->nodes.end()) return;
  node = std::move(it->second);
  shared_->nodes.erase(it);
  // (the idle mailboxes close when the last reference goes, outside this lock if a future
  // holds the node)
}

void SharedMemoryDispatch::AddCounters(ExpertTransportCounters& total) const {
  Shared& shared = *shared_;
  absl::MutexLock lock(&shared.counters_mutex);
  total.Add(shared.counters);  // (its shared_memory_dispatches = its dispatches)
}

std::optional<std::future<Result>> SharedMemoryDispatch::Dispatch(const std::string& node_id,
                                                                  const std::string& address,
                                                                  DispatchBatch& batch) {
  std::shared_ptr<Shared> shared = shared_;
  const DispatchShape shape = ShapeOf(batch);
  // Room for the request and for the reply written over it.
  const size_t needed = std::max(
      RequestBytesBound(batch), static_cast<size_t>(shape.expert_rows) * shape.hidden_size *
                                        sizeof(float) + kReplyOverheadBytes);
  if (needed > shared->options.max_capacity) return std::nullopt;  // (the stream carries it)

  std::shared_ptr<Node> node;
  std::shared_ptr<Node> replaced;  // a node that moved: closed outside the lock
  std::vector<std::unique_ptr<Attached>> dropped;  // closed outside the lock
  std::unique_ptr<Attached> attached;
  uint64_t id;
  {
    absl::MutexLock lock(&shared->mutex);
    std::shared_ptr<Node>& slot = shared->nodes[node_id];
    if (slot == nullptr || slot->address != address) {
      replaced = std::move(slot);
      slot = std::make_shared<Node>(address, shared->options);
    }
    node = slot;
    if (node->stream_only || absl::Now() < node->retry_after) return std::nullopt;
    id = shared->next_id++;
    // The smallest idle mailbox that fits and is still served (a node that restarted or stopped
    // serving left its mailboxes dead); dead ones are dropped.
    for (auto it = node->idle.begin(); it != node->idle.end();) {
      if (!(*it)->mailbox->ServerAlive()) {
        dropped.push_back(std::move(*it));
        it = node->idle.erase(it);
      } else if (attached == nullptr && (*it)->mailbox->capacity() >= needed) {
        attached = std::move(*it);
        it = node->idle.erase(it);
      } else {
        ++it;
      }
    }
  }
  dropped.clear();
  replaced.reset();
  if (attached == nullptr) {
    size_t capacity = shared->options.min_capacity;
    while (capacity < needed) capacity *= 2;
    capacity = std::min(capacity, shared->options.max_capacity);
    absl::StatusOr<std::unique_ptr<Attached>> made = shared->Attach(*node, capacity);
    if (!made.ok()) {
      const bool for_good = MeansStreamOnly(made.status());
      {
        absl::MutexLock lock(&shared->mutex);
        if (for_good) {
          node->stream_only = true;
        } else {
          node->retry_after = absl::Now() + kRetryAttachAfter;
        }
      }
      if (for_good) {
        obs::LogInfo("expert node {} at {}: dispatching over the gRPC stream, not shared memory "
                     "({})",
                     node_id, address, std::string(made.status().message()));
      } else {
        obs::LogWarn("expert node {} at {}: no shared-memory mailbox for now, the gRPC stream "
                     "carries its dispatches for {} ({})",
                     node_id, address, absl::FormatDuration(kRetryAttachAfter),
                     std::string(made.status().message()));
      }
      return std::nullopt;  // `batch` is untouched
    }
    attached = *std::move(made);
  }

  const std::string who = absl::StrCat("expert node ", node_id, " (", address, ", shared memory): ");
  moemesh::v1::DispatchRequest request = DispatchRequestFromBatch(std::move(batch), id);
  const size_t request_bytes = request.ByteSizeLong();
  if (request_bytes > attached->mailbox->capacity()) {  // (RequestBytesBound is an upper bound)
    return ResolvedDispatch(absl::InternalError(absl::StrCat(who, "a request of ", request_bytes,
                                                  " bytes exceeds its ",
                                                  attached->mailbox->capacity(), "-byte mailbox")));
  }
  request.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(attached->mailbox->data()));
  absl::Duration limit;
  {
    absl::MutexLock lock(&shared->mutex);
    limit = node->deadline.Next();
  }
  shared->Count([&](ExpertTransportCounters& c) {
    ++c.dispatches;
    ++c.shared_memory_dispatches;
    c.bytes_sent += request_bytes;
  });
  const absl::Time sent = absl::Now();
  attached->mailbox->Post(request_bytes);
  return std::async(
      std::launch::deferred,
      [shared, node, node_id, who, shape, sent, limit, id,
       attached = std::move(attached)]() mutable -> Result {
        absl::StatusOr<size_t> length = attached->mailbox->AwaitReply(sent + limit);
        Result result;
        if (!length.ok()) {
          const bool late = absl::IsDeadlineExceeded(length.status());
          result = absl::UnavailableError(absl::StrCat(
              who, late ? absl::StrCat("no reply to a layer ", shape.layer, " dispatch within ",
                                       absl::FormatDuration(limit))
                        : std::string(length.status().message())));
          shared->Count([late](ExpertTransportCounters& c) {
            ++c.unavailable;
            if (late) ++c.deadline_exceeded;
          });
          attached.reset();  // unusable now
        } else {
          moemesh::v1::DispatchReply reply;
          if (!reply.ParseFromArray(attached->mailbox->data(), static_cast<int>(*length))) {
            result = absl::InternalError(absl::StrCat(who, "unparsable reply of ", *length,
                                                      " bytes"));
          } else if (reply.dispatch_id() != id) {
            result = absl::InternalError(absl::StrCat(who, "the reply is to dispatch ",
                                                      reply.dispatch_id(), ", not ", id));
          } else {
            result = DispatchResultFromReply(reply, shape, who);
          }
          attached->mailbox->Reset();
          shared->Count(
              [&](ExpertTransportCounters& c) { c.CountReply(result.status(), *length); });
        }
        const absl::Duration round_trip = absl::Now() - sent;
        {
          absl::MutexLock lock(&shared->mutex);
          if (result.ok()) node->deadline.Observe(round_trip);
          // Back to the pool while the node is still the one known under this id.
          auto it = shared->nodes.find(node_id);
          if (attached != nullptr && it != shared->nodes.end() && it->second == node &&
              node->idle.size() < kMaxIdlePerNode) {
            node->idle.push_back(std::move(attached));
          }
        }
        if (shared->options.on_round_trip) {
          shared->options.on_round_trip(node_id, absl::ToDoubleSeconds(round_trip), result.ok());
        }
        return result;  // a mailbox not pooled closes here
      });
}

}  // namespace moemesh::comm
