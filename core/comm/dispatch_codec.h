// Conversion between the expert data path's C++ types (comm::DispatchBatch / DispatchResult) and
// the wire messages (moemesh.v1.DispatchRequest / DispatchReply). Floats travel as float32
// little-endian bytes (comm::FloatBuffer), moved between batch and message, never copied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/comm/expert_transport.h"
#include "moemesh/v1/expert.pb.h"

namespace moemesh::comm {

// The request for `batch`, tagged `dispatch_id`; takes the batch's hidden bytes.
moemesh::v1::DispatchRequest DispatchRequestFromBatch(DispatchBatch batch, uint64_t dispatch_id);

// The batch a request carries, checked for consistent sizes (hidden bytes = rows * hidden_size *
// 4, one gate weight per row index, row indices < rows, each expert at most once and below
// `num_experts` when it is > 0); takes the request's hidden bytes (left empty on success).
// Errors: InvalidArgument saying which check failed.
absl::StatusOr<DispatchBatch> DispatchBatchFromRequest(moemesh::v1::DispatchRequest& request,
                                                       int num_experts);

// What was asked of a node: enough to check its reply's sizes.
struct DispatchShape {
  int layer = 0;
  int64_t rows = 0;
  int64_t expert_rows = 0;  // (row, expert) pairs: the sum of slice row counts
  int hidden_size = 0;
};

// The shape of `batch`.
DispatchShape ShapeOf(const DispatchBatch& batch);

// The result a reply to a request of `shape` carries; takes the reply's float bytes. `who`
// prefixes every error message ("expert node X (address, lane N): "). Errors:
// FAILED_PRECONDITION (NOT_HELD: names the missing experts), INVALID_ARGUMENT (the node rejected
// the request), UNAVAILABLE (overloaded), INTERNAL (sizes disagree, unknown code).
absl::StatusOr<DispatchResult> DispatchResultFromReply(moemesh::v1::DispatchReply& reply,
                                                       const DispatchShape& shape,
                                                       absl::string_view who);

}  // namespace moemesh::comm
