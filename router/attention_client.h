// The production AttentionBackend: runs each sequence as an AttentionService.AddSequence
// server-streaming call on the attention node the control plane picks, and moves it to another
// node when that one is lost (stream broken, node unavailable or unhealthy) or hands it back
// while draining: the sequence is resubmitted as prompt + the tokens already streamed (a
// recompute prefill, see sequence_replay.h) and the observer sees one continuous sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "moemesh/v1/attention.grpc.pb.h"
#include "router/attention_backend.h"

namespace moemesh::router {

// How the backend asks the control plane (kept as functions so that this client does not depend
// on the control plane's class).
struct GrpcAttentionBackendOptions {
  // OK when the cluster is ready, else Unavailable with the reason (GET /ready).
  std::function<absl::Status()> ready;
  // OK when every expert has a healthy holder, else Unavailable naming the first one that has not.
  std::function<absl::Status()> check_experts;
  // Address (host:port) of the attention node for a sequence that may use `reserve_tokens` of
  // cache, other than the addresses in `avoid` (nodes that just failed this sequence);
  // Unavailable when there is no such healthy, admitting attention node.
  std::function<absl::StatusOr<std::string>(uint64_t reserve_tokens,
                                            const std::vector<std::string>& avoid)>
      pick_node;
  // Optional: addresses of attention nodes the control plane holds for lost (no heartbeat within
  // its timeout). Their running sequences are resubmitted elsewhere even if their streams are
  // still open (a hung or partitioned node). Polled every `health_poll_interval`.
  std::function<std::vector<std::string>()> failed_nodes;
  absl::Duration health_poll_interval = absl::Milliseconds(250);
  // A sequence whose node failed looks for another this long (from the failure; each token
  // delivered since starts the clock again), then ends with Unavailable.
  absl::Duration failover_timeout = absl::Seconds(30);
  // At most this many resubmissions in a row without a token delivered; then the sequence ends
  // with Unavailable (as after failover_timeout).
  int max_resubmissions = 16;
  // Optional (metrics): a sequence was resubmitted. `reason`: "node_failed" (stream broken or
  // node unavailable), "node_unhealthy" (failed_nodes), "node_drained" (handed back while
  // draining); `delivered_tokens`: the tokens it had streamed, recomputed by the new node.
  std::function<void(const std::string& reason, int64_t delivered_tokens)> on_resubmit;
  // Optional (metrics): a sequence ran out of attention nodes (failover_timeout or
  // max_resubmissions) and failed.
  std::function<void()> on_failover_exhausted;
};

class GrpcAttentionBackend : public AttentionBackend {
 public:
  explicit GrpcAttentionBackend(GrpcAttentionBackendOptions options);
  // Every SequenceHandle must be gone first.
  ~GrpcAttentionBackend() override;

  absl::Status Ready() override;
  // One thread per sequence reads the stream and calls the observer. Cancel() is
  // ClientContext::TryCancel (the node aborts the sequence and frees its cache). A request
  // without a seed gets one here (so that a resubmission draws the same tokens). Only the
  // first node choice can fail synchronously; later failures end the sequence with Unavailable
  // naming the last node tried, once no node took it within failover_timeout.
  absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) override;

 private:
  class Sequence;
  moemesh::v1::AttentionService::Stub* StubFor(const std::string& address);
  void WatchHealth();

  GrpcAttentionBackendOptions options_;
  absl::Mutex mutex_;
  std::map<std::string, std::unique_ptr<moemesh::v1::AttentionService::Stub>> stubs_
      ABSL_GUARDED_BY(mutex_);
  std::set<Sequence*> sequences_ ABSL_GUARDED_BY(mutex_);  // running, for WatchHealth
  std::mt19937_64 seeds_ ABSL_GUARDED_BY(mutex_);
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread health_thread_;  // only with options.failed_nodes
};

}  // namespace moemesh::router
