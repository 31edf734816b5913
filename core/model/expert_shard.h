// A set of routed experts held in this process and the SwiGLU FFN that runs them. In
// single-process mode it holds every expert; an expert node holds its placement's share.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint.h"
#include "core/model/model_weights.h"
#include "core/model/routed_experts.h"

namespace moemesh::model {

// (layer, logical expert id).
using ExpertKey = std::pair<int, int>;

class ExpertShard : public RoutedExperts {
 public:
  // Loads the listed experts (only their tensors' bytes are read).
  static absl::StatusOr<std::unique_ptr<ExpertShard>> Load(checkpoint::Checkpoint& checkpoint,
                                                           const std::vector<ExpertKey>& experts);
  // Every routed expert of every MoE layer.
  static absl::StatusOr<std::unique_ptr<ExpertShard>> LoadAll(checkpoint::Checkpoint& checkpoint);
  // A shard holding exactly `experts`: those `base` holds share its weights (no copy, no read),
  // only the others are read from the checkpoint (their byte ranges). `base` may be null.
  // `bytes_read` (if not null) gets the checkpoint bytes read for the new ones.
  static absl::StatusOr<std::unique_ptr<ExpertShard>> Rebuild(
      checkpoint::Checkpoint& checkpoint, const ExpertShard* base,
      const std::vector<ExpertKey>& experts, int64_t* bytes_read = nullptr);

  bool Holds(int layer, int expert) const { return experts_.count({layer, expert}) > 0; }
  std::vector<ExpertKey> HeldExperts() const;
  int hidden_size() const { return hidden_size_; }
  int64_t StorageBytes() const;

  // RoutedExperts: sums over all top-k experts of each row; every one must be held here
  // (FailedPrecondition otherwise). Computes when the Combine is called.
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const GateDecision& decision) override;

  // The partial sum over the experts this shard holds: out[r] = sum over k with experts[r, k]
  // held here of weight[r, k] * expert(hidden[r]), experts added in ascending id order (model.py
  // MoE order). `out` [rows, hidden_size] is overwritten. Experts not held are skipped: the
  // caller decides which rows go where. Errors: InvalidArgument for an expert id out of range.
  absl::Status ComputePartial(int layer, const float* hidden, int64_t rows,
                              const GateDecision& decision, float* out) const;

  // One held expert's FFN on contiguous rows: out[rows, hidden_size] = expert(x[rows,
  // hidden_size]), overwritten. Expert nodes build the partial sum from it (gather rows, run,
  // Axpy by gate weight in ascending expert order), as ComputePartial does. Errors:
  // FailedPrecondition when (layer, expert) is not held here.
  absl::Status ComputeExpert(int layer, int expert, const float* x, int64_t rows, float* out) const;

 private:
  ExpertShard(int hidden_size, int num_experts)
      : hidden_size_(hidden_size), num_experts_(num_experts) {}
  int hidden_size_;
  int num_experts_;
  // Shared between shards rebuilt from one another (weights are immutable once loaded).
  std::map<ExpertKey, std::shared_ptr<const FeedForwardWeights>> experts_;
};

// out[rows, hidden] = down(silu(gate(x)) * up(x)) for x [rows, hidden] (model.py MLP/Expert).
void SwiGluFeedForward(const FeedForwardWeights& weights, const float* x, int64_t rows, float* out);

}  // namespace moemesh::model
