// Dispatches to expert nodes on this host through shared-memory mailboxes (shm_mailbox.h)
// instead of the gRPC stream: the same DispatchRequest / DispatchReply bytes, without TLS,
// HTTP/2 and gRPC's thread hand-offs. GrpcExpertTransport uses it first when enabled; a node that
// cannot open this process's segments (another host, another IPC namespace, an older node
// without ExpertService.ServeSharedMemory) is remembered as stream-only and reached over gRPC.
//
// Per node, a pool of attached mailboxes (one per dispatch in flight, so any number of lanes
// and threads may dispatch at once). A mailbox is attached by an ExpertService.ServeSharedMemory
// call that stays open for its life: the node serves it in that call's handler, so a node
// shutting down or this process dying ends it. Failures resolve futures as the stream's do:
// UNAVAILABLE (the node's process died: noticed within MailboxClient::kLivenessCheck; it stopped
// serving; no reply within the deadline), and the reply's
// FAILED_PRECONDITION / INVALID_ARGUMENT. A dispatch that cannot get a mailbox (larger than
// max_capacity, /dev/shm full, the node not answering the attach) goes over the stream; a node
// whose attach failed for such a reason is tried again after a few seconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/comm/expert_transport.h"
#include "grpcpp/support/channel_arguments.h"

namespace moemesh::comm {

struct ExpertTransportCounters;  // grpc_expert_transport.h

struct SharedMemoryDispatchOptions {
  // As GrpcExpertTransportOptions: the ceiling and floor of the adaptive per-node deadline.
  absl::Duration dispatch_deadline = absl::Seconds(10);
  absl::Duration dispatch_deadline_floor = absl::Seconds(10);
  // The channel to each node's ExpertService (comm::ExpertChannelArguments).
  grpc::ChannelArguments channel_arguments;
  // How long attaching a new mailbox may take (an RPC to the node).
  absl::Duration attach_timeout = absl::Seconds(2);
  // Smallest mailbox (bytes of message space); larger ones are made for larger dispatches, up to
  // max_capacity; a dispatch that needs more goes over the stream.
  size_t min_capacity = size_t{1} << 20;
  size_t max_capacity = size_t{64} << 20;
  // Optional: called for every reply with its round trip in seconds and whether it was OK.
  std::function<void(const std::string& node_id, double seconds, bool ok)> on_round_trip;
};

class SharedMemoryDispatch {
 public:
  explicit SharedMemoryDispatch(SharedMemoryDispatchOptions options);
  ~SharedMemoryDispatch();  // closes idle mailboxes; futures still out keep what they use

  // Sends `batch` to `node_id` through a mailbox and returns its reply's future (resolved in the
  // thread that calls get()). nullopt when the node is stream-only: `batch` is then as it was
  // and the caller sends it on the stream. Thread-safe.
  std::optional<std::future<absl::StatusOr<DispatchResult>>> Dispatch(const std::string& node_id,
                                                                      const std::string& address,
                                                                      DispatchBatch& batch);
  // Closes the node's idle mailboxes and forgets whether it is stream-only.
  void Forget(const std::string& node_id);

  // Adds this path's dispatches, replies, errors and bytes to `counters`.
  void AddCounters(ExpertTransportCounters& counters) const;

 private:
  struct Node;
  struct Attached;
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace moemesh::comm
