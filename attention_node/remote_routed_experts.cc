#include "attention_node/remote_routed_experts.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kernels/cpu/elementwise.h"

namespace moemesh::attention_node {
namespace {

// The rows of one step that go to one logical expert (rows ascending, with their gate weights).
struct ExpertRows {
  int32_t expert = 0;
  std::vector<int64_t> rows;
  std::vector<float> weights;
};

// What one node is sent: compacted hidden rows and, per expert (ascending), the step rows.
struct NodeShare {
  std::string node_id;
  std::string address;
  std::vector<int64_t> rows;            // step rows, ascending; position = compact row index
  std::vector<ExpertRows> experts;      // ascending expert id
};

// Assigns every expert's rows to one replica. Unavailable when an expert has no healthy holder.
absl::StatusOr<std::map<std::string, NodeShare>> AssignReplicas(
    const PlacementSnapshot& snapshot, int layer, std::vector<ExpertRows> experts,
    uint64_t spread, const std::set<std::string>& excluded) {
  std::map<std::string, NodeShare> shares;
  for (ExpertRows& expert : experts) {
    const std::string* node = snapshot.ChooseReplica(layer, expert.expert, spread, &excluded);
    if (node == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "no healthy expert node holds expert ", expert.expert, " of layer ", layer,
          " (placement version ", snapshot.version, ")"));
    }
    NodeShare& share = shares[*node];
    share.node_id = *node;
    share.address = snapshot.addresses.at(*node);
    share.experts.push_back(std::move(expert));
  }
  for (auto& [id, share] : shares) {
    std::set<int64_t> rows;
    for (const ExpertRows& expert : share.experts) rows.insert(expert.rows.begin(), expert.rows.end());
    share.rows.assign(rows.begin(), rows.end());
  }
  return shares;
}

// AssignReplicas on the newest placement; while some expert has no live holder, waits for the
// router to re-place it (refreshing the placement every 100 ms) up to `timeout`. After a second
// of waiting, this node's own suspicions are dropped once (a node suspected on a slow reply that
// the router still calls healthy is tried again). `*used` is the snapshot the shares are for;
// `*waited` the seconds spent waiting.
absl::StatusOr<std::map<std::string, NodeShare>> AssignOrWait(
    PlacementTable* table, const std::function<void()>& refresh, absl::Duration timeout,
    int layer, const std::vector<ExpertRows>& experts, uint64_t spread,
    std::set<std::string> skip, std::shared_ptr<const PlacementSnapshot>* used, double* waited) {
  const absl::Time start = absl::Now();
  bool forgiven = false;
  while (true) {
    *used = table->Snapshot();
    absl::StatusOr<std::map<std::string, NodeShare>> shares =
        AssignReplicas(**used, layer, experts, spread, skip);
    *waited = absl::ToDoubleSeconds(absl::Now() - start);
    if (shares.ok() || refresh == nullptr) return shares;
    if (absl::Now() - start >= timeout) {
      if (timeout <= absl::ZeroDuration()) return shares;
      return absl::UnavailableError(absl::StrCat(shares.status().message(), "; waited ",
                                                 absl::FormatDuration(timeout),
                                                 " for it to be re-placed"));
    }
    if (!forgiven && absl::Now() - start >= absl::Seconds(1)) {
      forgiven = true;
      table->Forgive();
      skip.clear();
    }
    absl::SleepFor(absl::Milliseconds(100));
    refresh();
  }
}

// A request in flight and the (expert, step rows) its outputs answer, in slice order.
struct Pending {
  std::string node_id;
  std::vector<ExpertRows> experts;
  std::future<absl::StatusOr<comm::DispatchResult>> result;
};

}  // namespace

RemoteRoutedExperts::RemoteRoutedExperts(comm::ExpertTransport* transport,
                                         PlacementTable* placement, int lane, int hidden_size,
                                         std::function<void()> refresh_placement,
                                         int last_moe_layer)
    : transport_(transport),
      placement_(placement),
      lane_(lane),
      hidden_size_(hidden_size),
      refresh_placement_(std::move(refresh_placement)),
      last_moe_layer_(last_moe_layer) {}

RemoteRoutedExperts::~RemoteRoutedExperts() { ReleasePin(); }

std::shared_ptr<const PlacementSnapshot> RemoteRoutedExperts::SnapshotFor(int layer) {
  absl::MutexLock lock(&mutex_);
  if (pinned_ == nullptr || layer <= last_layer_ || last_moe_layer_ < 0) {
    if (pinned_ != nullptr) placement_->Unpin(pinned_->version);
    pinned_ = placement_->Pin();
  }
  last_layer_ = layer;
  return pinned_;
}

void RemoteRoutedExperts::ReleasePin() {
  absl::MutexLock lock(&mutex_);
  if (pinned_ != nullptr) placement_->Unpin(pinned_->version);
  pinned_ = nullptr;
  last_layer_ = -1;
}

absl::StatusOr<model::RoutedExperts::Combine> RemoteRoutedExperts::Dispatch(
    int layer, const float* hidden, int64_t rows, const model::GateDecision& decision) {
  const auto started = std::chrono::steady_clock::now();
  std::shared_ptr<const PlacementSnapshot> snapshot = SnapshotFor(layer);
  uint64_t spread;
  {
    absl::MutexLock lock(&mutex_);
    spread = dispatches_++;
  }
  // Rows per expert, ascending expert id and row.
  std::map<int32_t, ExpertRows> by_expert;
  for (int64_t row = 0; row < rows; ++row) {
    for (int k = 0; k < decision.top_k; ++k) {
      const int32_t expert = decision.experts[row * decision.top_k + k];
      ExpertRows& entry = by_expert[expert];
      entry.expert = expert;
      entry.rows.push_back(row);
      entry.weights.push_back(decision.weights[row * decision.top_k + k]);
    }
  }
  std::vector<ExpertRows> experts;
  for (auto& [id, entry] : by_expert) experts.push_back(std::move(entry));

  // Health comes from the newest table (a node suspected since the pass began is skipped).
  const std::set<std::string> excluded = placement_->Snapshot()->unhealthy;
  absl::StatusOr<std::map<std::string, NodeShare>> shares =
      AssignReplicas(*snapshot, layer, experts, spread, excluded);
  if (!shares.ok() && refresh_placement_ != nullptr) {
    // This node's copy of the placement may just be behind the router's: fetch it and use the
    // newest version for this layer; an expert whose nodes died waits to be re-placed.
    refresh_placement_();
    double waited = 0;
    shares = AssignOrWait(placement_, refresh_placement_, recovery_timeout_, layer, experts,
                          spread, {}, &snapshot, &waited);
    if (waited > 0.05) {
      absl::MutexLock lock(&mutex_);
      ++statistics_.recovery_waits;
      statistics_.recovery_wait_seconds += waited;
    }
  }
  if (!shares.ok()) {
    ReleasePin();
    absl::MutexLock lock(&mutex_);
    ++statistics_.failures;
    return shares.status();
  }
  const int64_t hidden_size = hidden_size_;
  // Sends each share; returns the requests in flight.
  auto send = [this, layer, hidden, hidden_size](std::map<std::string, NodeShare>& shares,
                                                 uint64_t version) {
    std::vector<Pending> pending;
    for (auto& [node_id, share] : shares) {
      comm::DispatchBatch batch;
      batch.layer = layer;
      batch.placement_version = version;
      batch.hidden_size = static_cast<int>(hidden_size);
      // The rows are gathered straight into the bytes the request will carry.
      batch.hidden = comm::FloatBuffer(share.rows.size() * hidden_size);
      std::map<int64_t, uint32_t> compact;
      for (size_t i = 0; i < share.rows.size(); ++i) {
        compact[share.rows[i]] = static_cast<uint32_t>(i);
        std::memcpy(batch.hidden.data() + i * hidden_size, hidden + share.rows[i] * hidden_size,
                    sizeof(float) * hidden_size);
      }
      for (const ExpertRows& expert : share.experts) {
        comm::ExpertSliceRows slice;
        slice.expert = expert.expert;
        for (int64_t row : expert.rows) slice.rows.push_back(compact.at(row));
        slice.gate_weights = expert.weights;
        batch.slices.push_back(std::move(slice));
      }
      pending.push_back(Pending{node_id, std::move(share.experts),
                                transport_->Dispatch(node_id, share.address, lane_,
                                                     std::move(batch))});
    }
    return pending;
  };
  auto first = std::make_shared<std::vector<Pending>>(send(*shares, snapshot->version));
  const bool ends_pass = last_moe_layer_ < 0 || layer >= last_moe_layer_;
  return Combine([this, first, send, rows, hidden_size, started, layer, spread,
                  ends_pass](float* out) -> absl::Status {
    // (expert, weight, output row) per step row; combined once every output is in.
    struct Contribution {
      int32_t expert;
      float weight;
      const float* output;
    };
    std::vector<std::vector<Contribution>> per_row(static_cast<size_t>(rows));
    std::vector<comm::FloatBuffer> outputs;  // keeps every reply's floats alive (read in place)
    std::vector<Pending> pending = std::move(*first);
    absl::Status failure;
    uint64_t round_trips = 0, redispatches = 0, redispatched_rows = 0;
    uint64_t unreachable = 0, not_held = 0, waits = 0;
    double detection_sum = 0, detection_max = 0, waited_sum = 0;
    std::set<std::string> excluded;
    for (int attempt = 0; !pending.empty(); ++attempt) {
      std::vector<ExpertRows> retry;
      round_trips += pending.size();
      bool refresh = false;
      for (Pending& node : pending) {
        absl::StatusOr<comm::DispatchResult> result = node.result.get();
        absl::Status status = result.status();
        if (result.ok() && result->expert_outputs.empty() && !node.experts.empty()) {
          status = absl::InternalError("answered with the legacy partial-sum encoding");
        }
        if (!status.ok()) {
          failure = absl::Status(status.code(), absl::StrCat("expert node ", node.node_id, ": ",
                                                             status.message()));
          if (absl::IsFailedPrecondition(status)) {
            refresh = true;  // it no longer holds an expert: our placement is behind
            ++not_held;
          } else {
            placement_->Suspect(node.node_id);  // at once, for every later dispatch here
            ++unreachable;
            const double detected = std::chrono::duration<double>(
                                        std::chrono::steady_clock::now() - started)
                                        .count();
            detection_sum += detected;
            detection_max = std::max(detection_max, detected);
          }
          excluded.insert(node.node_id);
          for (ExpertRows& expert : node.experts) retry.push_back(std::move(expert));
          continue;
        }
        outputs.push_back(std::move(result->expert_outputs));
        const float* data = outputs.back().data();
        for (const ExpertRows& expert : node.experts) {
          for (size_t i = 0; i < expert.rows.size(); ++i) {
            per_row[expert.rows[i]].push_back({expert.expert, expert.weights[i], data});
            data += hidden_size;
          }
        }
      }
      pending.clear();
      if (retry.empty()) {
        failure = absl::OkStatus();
        break;
      }
      // Past kMaxTries rounds, go on only while the layer is within its recovery timeout (a
      // node tried again after a wait may still be the dead one the router has not noticed).
      if (attempt + 1 >= kMaxTries &&
          std::chrono::steady_clock::now() - started >=
              absl::ToChronoNanoseconds(recovery_timeout_)) {
        break;
      }
      // Re-send those experts' rows to another replica of the newest placement.
      if (refresh && refresh_placement_ != nullptr) refresh_placement_();
      std::shared_ptr<const PlacementSnapshot> latest = placement_->Snapshot();
      std::sort(retry.begin(), retry.end(),
                [](const ExpertRows& a, const ExpertRows& b) { return a.expert < b.expert; });
      std::set<std::string> skip = latest->unhealthy;
      skip.insert(excluded.begin(), excluded.end());
      absl::StatusOr<std::map<std::string, NodeShare>> again =
          AssignReplicas(*latest, layer, retry, spread, skip);
      if (!again.ok() && refresh) {
        // Every other holder was tried: a node that answered NOT_HELD may have loaded it since.
        skip = latest->unhealthy;
        again = AssignReplicas(*latest, layer, retry, spread, skip);
      }
      if (!again.ok() && refresh_placement_ != nullptr) {
        // No live replica left: wait for the router to re-place the experts.
        refresh_placement_();
        double waited = 0;
        again = AssignOrWait(placement_, refresh_placement_, recovery_timeout_, layer, retry,
                             spread, skip, &latest, &waited);
        if (waited > 0.05) {
          ++waits;
          waited_sum += waited;
        }
      }
      if (!again.ok()) {
        failure = again.status();
        break;
      }
      redispatches += again->size();
      for (const ExpertRows& expert : retry) redispatched_rows += expert.rows.size();
      pending = send(*again, latest->version);
    }
    if (failure.ok()) {
      std::memset(out, 0, sizeof(float) * static_cast<size_t>(rows * hidden_size));
      for (int64_t row = 0; row < rows; ++row) {
        std::vector<Contribution>& entries = per_row[row];
        std::sort(entries.begin(), entries.end(),
                  [](const Contribution& a, const Contribution& b) { return a.expert < b.expert; });
        for (const Contribution& entry : entries) {
          kernels::Axpy(hidden_size, entry.weight, entry.output, out + row * hidden_size);
        }
      }
    }
    if (ends_pass || !failure.ok()) ReleasePin();
    absl::MutexLock lock(&mutex_);
    ++statistics_.layer_dispatches;
    statistics_.node_round_trips += round_trips;
    statistics_.redispatches += redispatches;
    statistics_.redispatched_rows += redispatched_rows;
    statistics_.failovers_unreachable += unreachable;
    statistics_.failovers_not_held += not_held;
    statistics_.detection_seconds_sum += detection_sum;
    statistics_.detection_seconds_max = std::max(statistics_.detection_seconds_max, detection_max);
    statistics_.recovery_waits += waits;
    statistics_.recovery_wait_seconds += waited_sum;
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
