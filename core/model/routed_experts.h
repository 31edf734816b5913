// Where the routed experts of an MoE layer run. The attention side computes the gate and hands
// the rows to a RoutedExperts; single-process mode computes them in process (ExpertShard), the
// cluster dispatches them to expert nodes and combines their partial sums.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moemesh::model {

// The gate's decision for a batch of rows: `experts[r * top_k + k]` is the k-th chosen logical
// expert of row r (in the gate's top-k order) and `weights[...]` its weight (normalised and
// multiplied by routed_scaling_factor).
struct GateDecision {
  int top_k = 0;
  std::vector<int32_t> experts;
  std::vector<float> weights;
  int64_t rows() const { return top_k == 0 ? 0 : static_cast<int64_t>(experts.size()) / top_k; }
};

class RoutedExperts {
 public:
  // Waits for the routed output and writes it to `out` [rows, hidden_size] (overwritten).
  using Combine = std::function<absl::Status(float* out)>;

  virtual ~RoutedExperts() = default;
  // Starts computing, for each row r of `hidden` ([rows, hidden_size], the
  // post-attention-normed activations), sum over k of weight[r, k] * expert_{experts[r, k]}(
  // hidden[r]). The caller may compute other things (the shared expert) before calling the
  // returned Combine; `hidden` must stay valid until then. Errors (from either): an expert that
  // cannot be computed (not held, node unreachable) - never a silently partial sum.
  virtual absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                           const GateDecision& decision) = 0;

  // Dispatch and combine in one call.
  absl::Status Compute(int layer, const float* hidden, int64_t rows, const GateDecision& decision,
                       float* out) {
    absl::StatusOr<Combine> combine = Dispatch(layer, hidden, rows, decision);
    if (!combine.ok()) return combine.status();
    return (*combine)(out);
  }
};

}  // namespace moemesh::model
