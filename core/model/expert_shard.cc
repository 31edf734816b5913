#include "core/model/expert_shard.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/kernels/cpu/compute_pool.h"
#include "core/kernels/cpu/elementwise.h"
#include "core/kernels/cpu/linear.h"
#include "core/kernels/cpu/threading.h"
#include "core/status_macros.h"

namespace moemesh::model {

void SwiGluFeedForward(const FeedForwardWeights& weights, const float* x, int64_t rows,
                       float* out) {
  const int64_t intermediate = weights.gate_proj.rows;
  std::vector<float> gate(static_cast<size_t>(rows * intermediate));
  std::vector<float> up(static_cast<size_t>(rows * intermediate));
  kernels::Linear(x, rows, weights.gate_proj, gate.data());
  kernels::Linear(x, rows, weights.up_proj, up.data());
  kernels::SiluMultiply(gate.data(), up.data(), rows * intermediate);
  kernels::Linear(gate.data(), rows, weights.down_proj, out);
}

absl::StatusOr<std::unique_ptr<ExpertShard>> ExpertShard::Load(
    checkpoint::Checkpoint& checkpoint, const std::vector<ExpertKey>& experts) {
  const auto& config = checkpoint.config();
  std::unique_ptr<ExpertShard> shard(new ExpertShard(config.hidden_size, config.n_routed_experts));
  for (const auto& [layer, expert] : experts) {
    ASSIGN_OR_RETURN(FeedForwardWeights weights, LoadRoutedExpert(checkpoint, layer, expert));
    shard->experts_.emplace(ExpertKey{layer, expert},
                            std::make_shared<const FeedForwardWeights>(std::move(weights)));
  }
  return shard;
}

absl::StatusOr<std::unique_ptr<ExpertShard>> ExpertShard::Rebuild(
    checkpoint::Checkpoint& checkpoint, const ExpertShard* base,
    const std::vector<ExpertKey>& experts, int64_t* bytes_read) {
  const auto& config = checkpoint.config();
  std::unique_ptr<ExpertShard> shard(new ExpertShard(config.hidden_size, config.n_routed_experts));
  const uint64_t before = checkpoint.BytesRead();
  for (const ExpertKey& key : experts) {
    if (base != nullptr) {
      auto it = base->experts_.find(key);
      if (it != base->experts_.end()) {
        shard->experts_.emplace(key, it->second);
        continue;
      }
    }
    ASSIGN_OR_RETURN(FeedForwardWeights weights, LoadRoutedExpert(checkpoint, key.first, key.second));
    shard->experts_.emplace(key, std::make_shared<const FeedForwardWeights>(std::move(weights)));
  }
  if (bytes_read != nullptr) *bytes_read = static_cast<int64_t>(checkpoint.BytesRead() - before);
  return shard;
}

absl::StatusOr<std::unique_ptr<ExpertShard>> ExpertShard::LoadAll(
    checkpoint::Checkpoint& checkpoint) {
  const auto& config = checkpoint.config();
  std::vector<ExpertKey> experts;
  for (int layer : config.MoeLayers()) {
    for (int expert = 0; expert < config.n_routed_experts; ++expert) experts.push_back({layer, expert});
  }
  return Load(checkpoint, experts);
}

std::vector<ExpertKey> ExpertShard::HeldExperts() const {
  std::vector<ExpertKey> keys;
  for (const auto& [key, weights] : experts_) keys.push_back(key);
  return keys;
}

int64_t ExpertShard::StorageBytes() const {
  int64_t bytes = 0;
  for (const auto& [key, weights] : experts_) bytes += weights->StorageBytes();
  return bytes;
}

absl::StatusOr<RoutedExperts::Combine> ExpertShard::Dispatch(int layer, const float* hidden,
                                                              int64_t rows,
                                                              const GateDecision& decision) {
  for (int32_t expert : decision.experts) {
    if (!Holds(layer, expert)) {
      return absl::FailedPreconditionError(
          absl::StrCat("routed expert ", expert, " of layer ", layer, " is not held here"));
    }
  }
  return Combine([this, layer, hidden, rows, decision](float* out) {
    return ComputePartial(layer, hidden, rows, decision, out);
  });
}

absl::Status ExpertShard::ComputePartial(int layer, const float* hidden, int64_t rows,
                                         const GateDecision& decision, float* out) const {
  const int64_t hidden_size = hidden_size_;
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(rows * hidden_size));
  // Rows per expert, in ascending expert id, each with the row's gate weight.
  std::map<int, std::vector<std::pair<int64_t, float>>> rows_by_expert;
  for (int64_t row = 0; row < rows; ++row) {
    for (int k = 0; k < decision.top_k; ++k) {
      const int32_t expert = decision.experts[row * decision.top_k + k];
      if (expert < 0 || expert >= num_experts_) {
        return absl::InvalidArgumentError(
            absl::StrCat("routed expert id ", expert, " out of range [0, ", num_experts_, ")"));
      }
      if (!Holds(layer, expert)) continue;
      rows_by_expert[expert].push_back({row, decision.weights[row * decision.top_k + k]});
    }
  }
  // Each expert's FFN on its gathered rows, then the weighted sum in ascending expert id (the
  // same order whatever runs where, so the sum does not depend on the thread count). With enough
  // experts the threads take whole experts (one fork/join per layer instead of three per expert);
  // otherwise each expert's products use all threads.
  struct ExpertWork {
    const FeedForwardWeights* weights;
    const std::vector<std::pair<int64_t, float>>* assigned;
    std::vector<float> result;
  };
  std::vector<ExpertWork> work;
  work.reserve(rows_by_expert.size());
  for (const auto& [expert, assigned] : rows_by_expert) {
    work.push_back({experts_.at({layer, expert}).get(), &assigned, {}});
  }
  auto run = [&](ExpertWork& item) {
    const int64_t count = static_cast<int64_t>(item.assigned->size());
    std::vector<float> gathered(static_cast<size_t>(count * hidden_size));
    for (int64_t i = 0; i < count; ++i) {
      std::memcpy(gathered.data() + i * hidden_size,
                  hidden + (*item.assigned)[i].first * hidden_size, sizeof(float) * hidden_size);
    }
    item.result.resize(static_cast<size_t>(count * hidden_size));
    SwiGluFeedForward(*item.weights, gathered.data(), count, item.result.data());
  };
  const int threads = kernels::ComputeThreads();
  const int64_t items = static_cast<int64_t>(work.size());
  if (threads > 1 && items >= 2 * threads) {
    kernels::ParallelFor(items, threads, [&](int64_t i) { run(work[i]); });
  } else {
    for (ExpertWork& item : work) run(item);
  }
  for (const ExpertWork& item : work) {
    for (size_t i = 0; i < item.assigned->size(); ++i) {
      kernels::Axpy(hidden_size, (*item.assigned)[i].second, item.result.data() + i * hidden_size,
                    out + (*item.assigned)[i].first * hidden_size);
    }
  }
  return absl::OkStatus();
}

absl::Status ExpertShard::ComputeExpert(int layer, int expert, const float* x, int64_t rows,
                                        float* out) const {
  auto it = experts_.find({layer, expert});
  if (it == experts_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("routed expert ", expert, " of layer ", layer, " is not held here"));
  }
  SwiGluFeedForward(*it->second, x, rows, out);
  return absl::OkStatus();
}

}  // namespace moemesh::model
