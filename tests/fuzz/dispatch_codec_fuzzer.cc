// libFuzzer target: what an expert node does with the bytes of a DispatchRequest from the
// network: parse the message, then DispatchBatchFromRequest (the expert node's only decoding
// step) for a 256-expert model. Either INVALID (an error) or a batch whose every index is in
// range, so the expert FFN can never read outside the hidden rows.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "core/comm/dispatch_codec.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moemesh::comm;
  moemesh::v1::DispatchRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  constexpr int kExperts = 256;
  absl::StatusOr<DispatchBatch> batch = DispatchBatchFromRequest(request, kExperts);
  if (!batch.ok()) return 0;
  const int64_t rows = batch->rows();
  Check(batch->hidden_size == 0 ||
            batch->hidden.size() == static_cast<size_t>(rows) * batch->hidden_size,
        "hidden holds rows x hidden_size floats");
  std::set<int32_t> experts;
  for (const ExpertSliceRows& slice : batch->slices) {
    Check(slice.expert >= 0 && slice.expert < kExperts, "expert in range");
    Check(experts.insert(slice.expert).second, "each expert once");
    Check(slice.rows.size() == slice.gate_weights.size(), "one weight per row");
    for (uint32_t row : slice.rows) Check(static_cast<int64_t>(row) < rows, "row in range");
  }
  Check(request.hidden().empty(), "the hidden bytes were taken, not copied");
  // The attention node's side: the batch encodes back to the same request.
  const DispatchBatch original = *batch;
  moemesh::v1::DispatchRequest again = DispatchRequestFromBatch(*std::move(batch), request.dispatch_id());
  absl::StatusOr<DispatchBatch> decoded = DispatchBatchFromRequest(again, kExperts);
  Check(decoded.ok() && decoded->hidden == original.hidden && decoded->rows() == rows,
        "a batch round trips through its request");
  return 0;
}
