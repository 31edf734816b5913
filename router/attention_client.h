// The production AttentionBackend: runs each sequence as an AttentionService.AddSequence
// server-streaming call on the attention node the control plane picks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  // cache; Unavailable when there is no healthy attention node.
  std::function<absl::StatusOr<std::string>(uint64_t reserve_tokens)> pick_node;
};

class GrpcAttentionBackend : public AttentionBackend {
 public:
  explicit GrpcAttentionBackend(GrpcAttentionBackendOptions options);

  absl::Status Ready() override;
  // One thread per sequence reads the stream and calls the observer. Cancel() is
  // ClientContext::TryCancel (the node aborts the sequence and frees its cache). A node that
  // fails mid-stream ends the sequence with Unavailable naming its address.
  absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) override;

 private:
  moemesh::v1::AttentionService::Stub* StubFor(const std::string& address);

  GrpcAttentionBackendOptions options_;
  absl::Mutex mutex_;
  std::map<std::string, std::unique_ptr<moemesh::v1::AttentionService::Stub>> stubs_
      ABSL_GUARDED_BY(mutex_);
};

}  // namespace moemesh::router
