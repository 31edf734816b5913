// RoutedExperts over the expert data path: per MoE layer, dispatch each expert node the rows
// routed to the experts it holds (per the placement), then combine their partial sums in fixed
// node-id order (never arrival order), so the result does not depend on timing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "attention_node/placement_table.h"
#include "core/comm/expert_transport.h"
#include "core/model/routed_experts.h"

namespace moemesh::attention_node {

// Round-trip statistics (for the benchmark and, later, metrics).
struct DispatchStatistics {
  uint64_t layer_dispatches = 0;    // MoE layers dispatched
  uint64_t node_round_trips = 0;    // per-node requests
  double round_trip_seconds = 0;    // summed over layers: dispatch start -> last partial in
  uint64_t failures = 0;
};

class RemoteRoutedExperts : public model::RoutedExperts {
 public:
  // `lane` selects the transport stream (one per micro-batch), so concurrent micro-batches do
  // not queue behind each other. Neither pointer is owned. `refresh_placement`, if given, fetches
  // the newest placement into `placement` (synchronously); it is called once before a dispatch
  // gives up on an expert without a healthy holder, since this node's copy may lag the router's.
  RemoteRoutedExperts(comm::ExpertTransport* transport, PlacementTable* placement, int lane,
                      int hidden_size, std::function<void()> refresh_placement = nullptr);

  // Errors: UNAVAILABLE when an expert has no healthy holder or a node fails (the node is then
  // suspected until the next placement version); FAILED_PRECONDITION when a node no longer holds
  // an expert it was sent.
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const model::GateDecision& decision) override;

  DispatchStatistics statistics() const;

 private:
  comm::ExpertTransport* transport_;
  PlacementTable* placement_;
  int lane_;
  int hidden_size_;
  std::function<void()> refresh_placement_;
  mutable absl::Mutex mutex_;
  DispatchStatistics statistics_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace moemesh::attention_node
