// Per-expert load as the router sees it: the attention nodes' cumulative routed-token counts
// (from heartbeats) summed over nodes, since start ("total") and over a sliding window
// ("recent"), and per expert node (through the placement) the rows it was sent, from which the
// per-layer balancedness (mean / max rows per expert node) follows.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/checkpoint/model_config.h"
#include "moemesh/v1/control.pb.h"
#include "nlohmann/json.hpp"

namespace moemesh::router {

struct ExpertLoadOptions {
  absl::Duration window = absl::Seconds(60);          // "recent" covers this much time
  absl::Duration sample_interval = absl::Seconds(1);  // resolution of the window
};

// One MoE layer's routed tokens per logical expert.
struct LayerLoad {
  int layer = 0;
  std::vector<uint64_t> total;   // since the router started
  std::vector<uint64_t> recent;  // over the last window
};

// One expert node's share of a layer's load, through the placement (a replicated expert's
// tokens are split evenly over its replicas).
struct NodeLayerLoad {
  std::string node_id;
  bool healthy = false;
  std::vector<double> total_rows;   // per MoE layer, in LayerLoad order
  std::vector<double> recent_rows;
};

// Thread-safe.
class ExpertLoadTracker {
 public:
  ExpertLoadTracker(const checkpoint::ModelConfig& config, ExpertLoadOptions options = {});

  // Takes a heartbeat's cumulative counts (attention nodes; others are ignored). A count below
  // the node's previous one means the node restarted: its new count is all new load.
  void OnHeartbeat(const moemesh::v1::HeartbeatRequest& heartbeat, absl::Time now = absl::Now());
  // Every MoE layer, ascending.
  std::vector<LayerLoad> Layers(absl::Time now = absl::Now());
  // The window's routed tokens as planner input: [MoE layer (ascending)][logical expert].
  std::vector<std::vector<double>> RecentLoad(absl::Time now = absl::Now());
  // Per expert node of `placement` (in its order), rows per layer.
  static std::vector<NodeLayerLoad> NodeLoads(const std::vector<LayerLoad>& layers,
                                              const moemesh::v1::Placement& placement);
  // mean / max of `rows` over nodes (1 when nothing was routed).
  static double Balancedness(const std::vector<double>& rows);
  // The body of GET /v1/experts/load.
  nlohmann::json LoadJson(const moemesh::v1::Placement& placement, absl::Time now = absl::Now());
  absl::Duration window() const { return options_.window; }

 private:
  struct Sample {
    absl::Time time;
    std::vector<uint64_t> totals;  // flat [moe layer index * experts + expert]
  };
  void SampleLocked(absl::Time now, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const ExpertLoadOptions options_;
  const int experts_;
  std::vector<int> moe_layers_;
  std::map<int, int> layer_index_;  // layer -> index into moe_layers_
  absl::Mutex mutex_;
  std::vector<uint64_t> totals_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::vector<uint64_t>> last_seen_ ABSL_GUARDED_BY(mutex_);  // per node
  std::deque<Sample> samples_ ABSL_GUARDED_BY(mutex_);  // oldest first
};

}  // namespace moemesh::router
