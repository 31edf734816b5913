// Conversion between the expert data path's C++ types (comm::DispatchBatch / DispatchResult) and
// the wire messages (moemesh.v1.DispatchRequest / DispatchReply). Floats travel as float32
// little-endian bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/comm/expert_transport.h"
#include "moemesh/v1/expert.pb.h"

namespace moemesh::comm {

// Packs `values` as float32 little-endian bytes.
std::string FloatsToBytes(const float* values, size_t count);
// Unpacks float32 little-endian bytes. Errors: InvalidArgument if the size is not a multiple of 4.
absl::StatusOr<std::vector<float>> BytesToFloats(const std::string& bytes);

// The request for `batch`, tagged `dispatch_id`.
moemesh::v1::DispatchRequest DispatchRequestFromBatch(const DispatchBatch& batch,
                                                      uint64_t dispatch_id);

// The batch a request carries, checked for consistent sizes (hidden bytes = rows * hidden_size *
// 4, one gate weight per row index, row indices < rows, each expert at most once and below
// `num_experts` when it is > 0). Errors: InvalidArgument saying which check failed.
absl::StatusOr<DispatchBatch> DispatchBatchFromRequest(const moemesh::v1::DispatchRequest& request,
                                                       int num_experts);

}  // namespace moemesh::comm
