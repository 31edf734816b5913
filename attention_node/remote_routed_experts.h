// RoutedExperts over the expert data path: per MoE layer, dispatch each (row, chosen expert) to
// exactly one replica of that expert (per the placement), get back each expert's unweighted
// output per row, and combine: out[row] = sum over the row's experts in ascending logical expert
// id of gate_weight * output, with kernels::Axpy, exactly as ExpertShard::ComputePartial does in
// one process. So the result does not depend on timing, node count, replicas or placement.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attention_node/placement_table.h"
#include "core/comm/expert_transport.h"
#include "core/model/routed_experts.h"

namespace moemesh::attention_node {

// Round-trip statistics (for the benchmark and, later, metrics).
struct DispatchStatistics {
  uint64_t layer_dispatches = 0;    // MoE layers dispatched
  uint64_t node_round_trips = 0;    // per-node requests
  double round_trip_seconds = 0;    // summed over layers: dispatch start -> last output in
  uint64_t failures = 0;            // layers that failed after every retry
  uint64_t redispatches = 0;        // per-node requests sent again to another replica
  uint64_t redispatched_rows = 0;   // (row, expert) pairs sent again to another replica
  uint64_t failovers_unreachable = 0;  // node requests failed: unreachable, broken, deadline
  uint64_t failovers_not_held = 0;     // node requests refused: expert not held (placement lag)
  double detection_seconds_sum = 0;    // per unreachable failure: layer start -> failure seen
  double detection_seconds_max = 0;
  uint64_t recovery_waits = 0;         // layers that waited for an expert to get a live node
  double recovery_wait_seconds = 0;
};

class RemoteRoutedExperts : public model::RoutedExperts {
 public:
  // `lane` selects the transport stream (one per micro-batch), so concurrent micro-batches do
  // not queue behind each other. Neither pointer is owned. `refresh_placement`, if given, fetches
  // the newest placement into `placement` (synchronously); it is called before a dispatch gives
  // up on an expert without a healthy holder or re-sends rows a node no longer holds, since this
  // node's copy may lag the router's. `last_moe_layer` is the model's last MoE layer: a forward
  // pass pins one placement version from its first MoE layer to the end of that one (-1: pin per
  // layer).
  RemoteRoutedExperts(comm::ExpertTransport* transport, PlacementTable* placement, int lane,
                      int hidden_size, std::function<void()> refresh_placement = nullptr,
                      int last_moe_layer = -1);
  ~RemoteRoutedExperts() override;

  // Errors: UNAVAILABLE when an expert has no healthy holder or every replica tried failed (a
  // failed node is suspected until the next placement version), after waiting up to the
  // recovery timeout for the router to re-place it (the message names the missing experts); FAILED_PRECONDITION when no
  // holder has an expert it was sent even after a placement refresh. Rows a node could not
  // answer (unreachable, or it no longer holds the expert) are re-sent to another replica, up to
  // kMaxTries rounds (more while within the recovery timeout), before giving up.
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const model::GateDecision& decision) override;

  DispatchStatistics statistics() const;
  // How long a layer waits for an expert without a live holder to be re-placed (polling the
  // router's placement) before failing with UNAVAILABLE; zero (the default) fails at once.
  void set_recovery_timeout(absl::Duration timeout) { recovery_timeout_ = timeout; }

  static constexpr int kMaxTries = 3;

 private:
  // The snapshot of the forward pass this layer belongs to (pins a new one at a pass start).
  std::shared_ptr<const PlacementSnapshot> SnapshotFor(int layer);
  void ReleasePin();

  comm::ExpertTransport* transport_;
  PlacementTable* placement_;
  int lane_;
  int hidden_size_;
  std::function<void()> refresh_placement_;
  int last_moe_layer_;
  absl::Duration recovery_timeout_ = absl::ZeroDuration();
  mutable absl::Mutex mutex_;
  DispatchStatistics statistics_ ABSL_GUARDED_BY(mutex_);
  std::shared_ptr<const PlacementSnapshot> pinned_ ABSL_GUARDED_BY(mutex_);
  int last_layer_ ABSL_GUARDED_BY(mutex_) = -1;
  uint64_t dispatches_ ABSL_GUARDED_BY(mutex_) = 0;  // spreads experts over replicas
};

}  // namespace moemesh::attention_node
