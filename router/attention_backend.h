// The seam between the router's HTTP layer and the attention nodes: the server asks an
// AttentionBackend to run one sequence and receives its SequenceEvents through callbacks. The
// gRPC client (attention_client.h) is the production implementation; tests use a fake.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moemesh/v1/attention.pb.h"

namespace moemesh::router {

// Receives one sequence's events, from a backend thread. `on_event` is called for each
// SequenceEvent in order; `on_end` exactly once afterwards: OK when the node closed the stream
// normally, Cancelled after Cancel(), Unavailable (or another code) when the node failed.
struct SequenceObserver {
  std::function<void(const moemesh::v1::SequenceEvent&)> on_event;
  std::function<void(const absl::Status&)> on_end;
};

// One running sequence on an attention node.
class SequenceHandle {
 public:
  // Cancels the sequence if it is still running and waits until `on_end` has returned.
  virtual ~SequenceHandle() = default;
  // Aborts the sequence on the node (which frees its KV cache). Idempotent, non-blocking.
  virtual void Cancel() = 0;
};

// Where sequences run.
class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;

  // OK when the cluster can serve (every node healthy, every expert placed); otherwise
  // Unavailable with the reason. Backs GET /ready.
  virtual absl::Status Ready() = 0;

  // Picks an attention node and starts `request` on it. Unavailable, naming the missing piece,
  // when there is no healthy attention node or an expert has no healthy holder; then no
  // callback is ever called. A backend may move a running sequence to another node (when its
  // node is lost or drains); the observer still sees one sequence, each token once.
  virtual absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) = 0;
};

}  // namespace moemesh::router
