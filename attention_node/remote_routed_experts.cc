#include "attention_node/remote_routed_experts.h"

#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace moemesh::attention_node {
namespace {

// Rows of the step one node receives, and where its partial sums go back to.
struct NodeShare {
  std::string address;
  std::vector<int64_t> rows;  // step rows, ascending; position = compact row index
  std::map<int32_t, comm::ExpertSliceRows> slices;  // by expert id, ascending
};

// Groups the step's rows by the expert node serving each chosen expert, keyed (and so ordered)
// by node id: the combine order. Unavailable when an expert has no healthy holder.
// Per (row, expert) choice the work is hash and array lookups only: the node by the address of
// the id string the snapshot returned, a row's compact index by an array entry, the slice by a
// small hash map; the ordered result is built once at the end.
absl::StatusOr<std::map<std::string, NodeShare>> ShareRows(const PlacementSnapshot& snapshot,
                                                           int layer, int64_t rows,
                                                           const model::GateDecision& decision) {
  struct Building {
    const std::string* node;
    std::vector<int64_t> rows;
    std::vector<int32_t> compact;  // step row -> compact row, -1 if not sent to this node
    absl::flat_hash_map<int32_t, comm::ExpertSliceRows> slices;
  };
  std::vector<Building> building;
  absl::flat_hash_map<const std::string*, size_t> node_index;  // into building
  for (int64_t row = 0; row < rows; ++row) {
    for (int k = 0; k < decision.top_k; ++k) {
      const int32_t expert = decision.experts[row * decision.top_k + k];
      const std::string* node = snapshot.ChooseReplica(layer, expert);
      if (node == nullptr) {
        return absl::UnavailableError(absl::StrCat(
            "no healthy expert node holds expert ", expert, " of layer ", layer,
            " (placement version ", snapshot.version, ")"));
      }
      // Replica lists hold their own copies of a node id: the pointer finds the node fast, the
      // id decides which node it is.
      auto [cached, is_new] = node_index.try_emplace(node, 0);
      if (is_new) {
        size_t index = 0;
        while (index < building.size() && *building[index].node != *node) ++index;
        if (index == building.size()) {
          building.push_back(Building{node, {}, std::vector<int32_t>(rows, -1), {}});
        }
        cached->second = index;
      }
      Building& share = building[cached->second];
      if (share.compact[row] < 0) {
        share.compact[row] = static_cast<int32_t>(share.rows.size());
        share.rows.push_back(row);
      }
      comm::ExpertSliceRows& slice = share.slices[expert];
      slice.expert = expert;
      slice.rows.push_back(static_cast<uint32_t>(share.compact[row]));
      slice.gate_weights.push_back(decision.weights[row * decision.top_k + k]);
    }
  }
  std::map<std::string, NodeShare> shares;
  for (Building& share : building) {
    NodeShare& out = shares[*share.node];
    out.address = snapshot.addresses.at(*share.node);
    out.rows = std::move(share.rows);
    for (auto& [expert, slice] : share.slices) out.slices.emplace(expert, std::move(slice));
  }
  return shares;
}

}  // namespace

RemoteRoutedExperts::RemoteRoutedExperts(comm::ExpertTransport* transport,
                                         PlacementTable* placement, int lane, int hidden_size,
                                         std::function<void()> refresh_placement)
    : transport_(transport),
      placement_(placement),
      lane_(lane),
      hidden_size_(hidden_size),
      refresh_placement_(std::move(refresh_placement)) {}

absl::StatusOr<model::RoutedExperts::Combine> RemoteRoutedExperts::Dispatch(
    int layer, const float* hidden, int64_t rows, const model::GateDecision& decision) {
  const auto started = std::chrono::steady_clock::now();
  std::shared_ptr<const PlacementSnapshot> snapshot = placement_->Snapshot();
  absl::StatusOr<std::map<std::string, NodeShare>> shares =
      ShareRows(*snapshot, layer, rows, decision);
  if (!shares.ok() && refresh_placement_ != nullptr) {
    // This node's copy of the placement may just be behind the router's: fetch it once and
    // group again.
    refresh_placement_();
    snapshot = placement_->Snapshot();
    shares = ShareRows(*snapshot, layer, rows, decision);
  }
  if (!shares.ok()) {
    absl::MutexLock lock(&mutex_);
    ++statistics_.failures;
    return shares.status();
  }
  struct Pending {
    std::string node_id;
    std::vector<int64_t> rows;
    std::future<absl::StatusOr<comm::DispatchResult>> result;
  };
  auto pending = std::make_shared<std::vector<Pending>>();
  for (auto& [node_id, share] : *shares) {
    comm::DispatchBatch batch;
    batch.layer = layer;
    batch.placement_version = snapshot->version;
    batch.hidden_size = hidden_size_;
    batch.hidden.resize(share.rows.size() * hidden_size_);
    for (size_t i = 0; i < share.rows.size(); ++i) {
      std::memcpy(batch.hidden.data() + i * hidden_size_, hidden + share.rows[i] * hidden_size_,
                  sizeof(float) * hidden_size_);
    }
    for (auto& [expert, slice] : share.slices) batch.slices.push_back(std::move(slice));
    pending->push_back(Pending{node_id, std::move(share.rows),
                               transport_->Dispatch(node_id, share.address, lane_, std::move(batch))});
  }
  const int64_t hidden_size = hidden_size_;
  return Combine([this, pending, rows, hidden_size, started](float* out) -> absl::Status {
    std::memset(out, 0, sizeof(float) * static_cast<size_t>(rows * hidden_size));
    absl::Status failure;
    for (Pending& node : *pending) {  // ascending node id
      absl::StatusOr<comm::DispatchResult> result = node.result.get();
      if (!result.ok()) {
        if (failure.ok()) {
          failure = absl::Status(result.status().code(),
                                 absl::StrCat("expert node ", node.node_id, ": ",
                                              result.status().message()));
        }
        placement_->Suspect(node.node_id);
        continue;
      }
      const std::vector<float>& partial = result->partial_sum;
      if (partial.size() != node.rows.size() * hidden_size) {
        if (failure.ok()) {
          failure = absl::InternalError(absl::StrCat("expert node ", node.node_id,
                                                     " answered ", partial.size(),
                                                     " values for ", node.rows.size(), " rows"));
        }
        continue;
      }
      for (size_t i = 0; i < node.rows.size(); ++i) {
        float* destination = out + node.rows[i] * hidden_size;
        const float* source = partial.data() + i * hidden_size;
        for (int64_t j = 0; j < hidden_size; ++j) destination[j] += source[j];
      }
    }
    absl::MutexLock lock(&mutex_);
    ++statistics_.layer_dispatches;
    statistics_.node_round_trips += pending->size();
    statistics_.round_trip_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!failure.ok()) ++statistics_.failures;
    return failure;
  });
}

DispatchStatistics RemoteRoutedExperts::statistics() const {
  absl::MutexLock lock(&mutex_);
  return statistics_;
}

}  // namespace moemesh::attention_node
