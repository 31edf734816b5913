#include "core/comm/dispatch_codec.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moemesh::comm {

moemesh::v1::DispatchRequest DispatchRequestFromBatch(DispatchBatch batch, uint64_t dispatch_id) {
  moemesh::v1::DispatchRequest request;
  request.set_dispatch_id(dispatch_id);
  request.set_layer(static_cast<uint32_t>(batch.layer));
  request.set_placement_version(batch.placement_version);
  request.set_hidden_size(static_cast<uint32_t>(batch.hidden_size));
  request.set_rows(static_cast<uint32_t>(batch.rows()));
  request.set_hidden(batch.hidden.TakeBytes());
  for (const ExpertSliceRows& slice : batch.slices) {
    moemesh::v1::ExpertSlice* out = request.add_slices();
    out->set_expert(static_cast<uint32_t>(slice.expert));
    out->mutable_row_indices()->Add(slice.rows.begin(), slice.rows.end());
    out->mutable_gate_weights()->Add(slice.gate_weights.begin(), slice.gate_weights.end());
  }
  return request;
}

absl::StatusOr<DispatchBatch> DispatchBatchFromRequest(moemesh::v1::DispatchRequest& request,
                                                       int num_experts) {
  const uint64_t rows = request.rows();
  const uint64_t hidden_size = request.hidden_size();
  if (hidden_size == 0) return absl::InvalidArgumentError("hidden_size is 0");
  if (request.hidden().size() != rows * hidden_size * sizeof(float)) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden has ", request.hidden().size(), " bytes, expected rows ", rows,
                     " x hidden_size ", hidden_size, " x 4 = ", rows * hidden_size * 4));
  }
  DispatchBatch batch;
  batch.layer = static_cast<int>(request.layer());
  batch.placement_version = request.placement_version();
  batch.hidden_size = static_cast<int>(hidden_size);
  std::set<uint32_t> seen;
  for (const moemesh::v1::ExpertSlice& slice : request.slices()) {
    if (num_experts > 0 && slice.expert() >= static_cast<uint32_t>(num_experts)) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", slice.expert(),
                                                     " out of range [0, ", num_experts, ")"));
    }
    if (!seen.insert(slice.expert()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", slice.expert(), " appears in more than one slice"));
    }
    if (slice.row_indices_size() != slice.gate_weights_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert ", slice.expert(), ": ", slice.row_indices_size(), " row indices but ",
          slice.gate_weights_size(), " gate weights"));
    }
    ExpertSliceRows rows_of_expert;
    rows_of_expert.expert = static_cast<int32_t>(slice.expert());
    for (uint32_t row : slice.row_indices()) {
      if (row >= rows) {
        return absl::InvalidArgumentError(absl::StrCat("expert ", slice.expert(), ": row index ",
                                                       row, " out of range [0, ", rows, ")"));
      }
      rows_of_expert.rows.push_back(row);
    }
    rows_of_expert.gate_weights.assign(slice.gate_weights().begin(), slice.gate_weights().end());
    batch.slices.push_back(std::move(rows_of_expert));
  }
  // (The size was checked above: a multiple of 4.)
  auto hidden = FloatBuffer::FromBytes(std::move(*request.mutable_hidden()));
  if (!hidden.ok()) return hidden.status();
  batch.hidden = *std::move(hidden);
  return batch;
}

DispatchShape ShapeOf(const DispatchBatch& batch) {
  DispatchShape shape{batch.layer, batch.rows(), 0, batch.hidden_size};
  for (const ExpertSliceRows& slice : batch.slices) {
    shape.expert_rows += static_cast<int64_t>(slice.rows.size());
  }
  return shape;
}

absl::StatusOr<DispatchResult> DispatchResultFromReply(moemesh::v1::DispatchReply& reply,
                                                       const DispatchShape& shape,
                                                       absl::string_view who) {
  auto Describe = [who](absl::string_view what) { return absl::StrCat(who, what); };
  using moemesh::v1::DispatchReply;
  switch (reply.code()) {
    case DispatchReply::OK: {
      DispatchResult result;
      result.node_placement_version = reply.placement_version();
      result.compute_seconds = reply.compute_seconds();
      if (!reply.expert_outputs().empty() || shape.expert_rows == 0) {
        const uint64_t expected =
            static_cast<uint64_t>(shape.expert_rows) * shape.hidden_size * sizeof(float);
        if (reply.expert_outputs().size() != expected) {
          return absl::InternalError(Describe(absl::StrCat(
              "reply to dispatch ", reply.dispatch_id(), " has ", reply.expert_outputs().size(),
              " bytes of expert outputs, expected ", expected)));
        }
        auto floats = FloatBuffer::FromBytes(std::move(*reply.mutable_expert_outputs()));
        if (!floats.ok()) return floats.status();
        result.expert_outputs = *std::move(floats);
        return result;
      }
      const uint64_t expected =
          static_cast<uint64_t>(shape.rows) * shape.hidden_size * sizeof(float);
      if (reply.partial_sum().size() != expected) {
        return absl::InternalError(Describe(absl::StrCat(
            "reply to dispatch ", reply.dispatch_id(), " has ", reply.partial_sum().size(),
            " bytes of partial sums, expected ", expected)));
      }
      auto floats = FloatBuffer::FromBytes(std::move(*reply.mutable_partial_sum()));
      if (!floats.ok()) return floats.status();
      result.partial_sum = *std::move(floats);
      return result;
    }
    case DispatchReply::NOT_HELD:
      return absl::FailedPreconditionError(Describe(absl::StrCat(
          "does not hold layer ", shape.layer, " experts [",
          absl::StrJoin(reply.missing_experts(), ", "), "] (node serves placement version ",
          reply.placement_version(), ")", reply.error().empty() ? "" : ": ", reply.error())));
    case DispatchReply::INVALID:
      return absl::InvalidArgumentError(
          Describe(absl::StrCat("rejected dispatch: ", reply.error())));
    case DispatchReply::OVERLOADED:
      return absl::UnavailableError(Describe(absl::StrCat("overloaded: ", reply.error())));
    default:
      return absl::InternalError(
          Describe(absl::StrCat("unknown reply code ", static_cast<int>(reply.code()))));
  }
}

}  // namespace moemesh::comm
