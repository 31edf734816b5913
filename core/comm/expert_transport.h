// The expert data path behind one interface: an attention node sends one MoE layer's rows to an
// expert node and gets back their weighted partial sums. The gRPC transport carries it between
// machines today; an NCCL transport can carry it between GPUs without the services changing.
#pragma once

#include <cstdint>
#include <future>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/comm/float_buffer.h"

namespace moemesh::comm {

// The rows of one dispatch that go to one logical expert.
struct ExpertSliceRows {
  int32_t expert = 0;
  std::vector<uint32_t> rows;          // indices into DispatchBatch::hidden rows
  std::vector<float> gate_weights;     // one per row
};

// One MoE layer of one micro-batch for one expert node.
struct DispatchBatch {
  int layer = 0;
  uint64_t placement_version = 0;
  int hidden_size = 0;
  FloatBuffer hidden;  // [rows, hidden_size], compacted to the rows this node needs
  std::vector<ExpertSliceRows> slices;
  int64_t rows() const { return hidden_size == 0 ? 0 : static_cast<int64_t>(hidden.size()) / hidden_size; }
};

// What an expert node answers. Current nodes fill expert_outputs: [sum of slice row counts,
// hidden_size], expert(row) unweighted, slices in batch order and rows in slice order (the
// attention node weights and adds them in ascending expert id, so placement changes no bit).
// The legacy encoding fills partial_sum [rows, hidden_size] (sum over the batch's slices of
// gate_weight * expert(row), experts in ascending id order) instead.
struct DispatchResult {
  FloatBuffer expert_outputs;
  FloatBuffer partial_sum;
  uint64_t node_placement_version = 0;
  double compute_seconds = 0;
};

// A future already holding `result` (a dispatch answered without a round trip: refused
// before sending, or failed at once).
inline std::future<absl::StatusOr<DispatchResult>> ResolvedDispatch(
    absl::StatusOr<DispatchResult> result) {
  std::promise<absl::StatusOr<DispatchResult>> promise;
  promise.set_value(std::move(result));
  return promise.get_future();
}

class ExpertTransport {
 public:
  virtual ~ExpertTransport() = default;
  // Starts a round trip to expert node `node_id` at `address` on lane `lane` (one ordered stream
  // per lane, e.g. per micro-batch). The future resolves to the node's partial sums, or to:
  // UNAVAILABLE (node unreachable, stream broken, or no reply within the deadline),
  // FAILED_PRECONDITION (the node does not hold a requested expert; the message names them),
  // INVALID_ARGUMENT (the node rejected the batch). Never resolves to a wrong answer. The future
  // may be deferred (a shared-memory dispatch waits for its reply in the thread calling get()):
  // take results with get(), not wait_for.
  virtual std::future<absl::StatusOr<DispatchResult>> Dispatch(const std::string& node_id,
                                                               const std::string& address,
                                                               int lane, DispatchBatch batch) = 0;
  // Drops connections to a node (it left the placement or restarted).
  virtual void Forget(const std::string& node_id) = 0;
};

}  // namespace moemesh::comm
