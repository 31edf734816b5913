// ExpertTransport over gRPC: per (expert node, lane) one long-lived bidirectional
// ExpertService.Dispatch stream; requests carry a dispatch_id and a reader thread per stream
// resolves the matching future.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/comm/expert_transport.h"
#include "grpcpp/support/channel_arguments.h"

namespace moemesh::comm {

struct GrpcExpertTransportOptions {
  // A dispatch without a reply within this time resolves to UNAVAILABLE naming the node, and its
  // stream is cancelled (the lane is ordered, so everything behind it is late too).
  // This is the ceiling: once a stream has seen a few replies, its deadline is 10 times its
  // slowest recent round trip (a decaying maximum), but never below dispatch_deadline_floor.
  // A floor at or above the ceiling keeps the fixed deadline.
  absl::Duration dispatch_deadline = absl::Seconds(10);
  absl::Duration dispatch_deadline_floor = absl::Seconds(10);
  // Channel reconnect backoff bounds: a restarted node is reached again within about this.
  absl::Duration max_reconnect_backoff = absl::Seconds(1);
  // HTTP/2 keepalive on every stream's connection (gRPC GRPC_ARG_KEEPALIVE_*): a PING after
  // `keepalive_time` without traffic, and the connection is closed when it is not acknowledged
  // within `keepalive_timeout`. The stream then breaks like any broken stream: everything pending
  // on it fails with UNAVAILABLE (the attention node suspects the node at once and re-dispatches)
  // without waiting for a dispatch deadline, e.g. for a node whose host or network went away
  // without closing the connection. Zero keepalive_time turns it off. The servers accept pings
  // this often (comm::StartGrpcServer).
  absl::Duration keepalive_time = absl::Seconds(2);
  absl::Duration keepalive_timeout = absl::Seconds(1);
  // Dispatch to expert nodes that share this host's shared memory through mailboxes
  // (shm_expert_dispatch.h) rather than the stream; nodes that cannot (another host) get the
  // stream. Same replies, same errors, ~2 futex wakes per round trip instead of gRPC's.
  bool shared_memory = false;
  // Optional (metrics): called for every reply (from a stream's reader thread, or the thread
  // taking a shared-memory dispatch's result), with the seconds from the request's write to its
  // reply and whether the reply was OK.
  std::function<void(const std::string& node_id, double seconds, bool ok)> on_round_trip;
};

// The arguments of every channel to an expert node: a local subchannel pool (a fresh
// connection per channel), no message size limit, reconnect backoff within
// [100 ms, max_reconnect_backoff] and the HTTP/2 keepalive of `options`.
grpc::ChannelArguments ExpertChannelArguments(const GrpcExpertTransportOptions& options);

// Counters for the metrics issue (plain numbers, read with counters()).
struct ExpertTransportCounters {
  uint64_t dispatches = 0;
  uint64_t ok = 0;
  uint64_t unavailable = 0;        // broken stream, unreachable node, deadline
  uint64_t deadline_exceeded = 0;  // subset of unavailable
  uint64_t not_held = 0;
  uint64_t invalid = 0;
  uint64_t reconnects = 0;         // streams opened after the first per (node, lane)
  uint64_t shared_memory_dispatches = 0;  // subset of dispatches: through a shared-memory mailbox
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;

  // Counts one reply of `bytes` that resolved to `result` (ok, not_held, invalid, unavailable).
  void CountReply(const absl::Status& result, uint64_t bytes);
  // Adds every counter of `other`.
  void Add(const ExpertTransportCounters& other);
};

// Thread-safe: any number of threads may call Dispatch concurrently (on the same or different
// lanes). Within one lane, stream requests are written in call order (shared-memory dispatches
// are independent of each other).
class SharedMemoryDispatch;  // shm_expert_dispatch.h

class GrpcExpertTransport : public ExpertTransport {
 public:
  explicit GrpcExpertTransport(GrpcExpertTransportOptions options = {});
  ~GrpcExpertTransport() override;  // fails everything pending with UNAVAILABLE, joins threads

  std::future<absl::StatusOr<DispatchResult>> Dispatch(const std::string& node_id,
                                                       const std::string& address, int lane,
                                                       DispatchBatch batch) override;
  void Forget(const std::string& node_id) override;

  ExpertTransportCounters counters() const;

 private:
  class Stream;
  void WatchdogLoop();
  void Count(const std::function<void(ExpertTransportCounters&)>& update);

  const GrpcExpertTransportOptions options_;
  mutable absl::Mutex mutex_;
  std::map<std::pair<std::string, int>, std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mutex_);
  std::map<std::pair<std::string, int>, int> opened_ ABSL_GUARDED_BY(mutex_);
  mutable absl::Mutex counters_mutex_;
  ExpertTransportCounters counters_ ABSL_GUARDED_BY(counters_mutex_);
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread watchdog_;
  std::unique_ptr<SharedMemoryDispatch> shared_memory_;  // when options_.shared_memory
};

}  // namespace moemesh::comm
