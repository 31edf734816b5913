// Prometheus metrics of an expert node: rows computed per (layer, expert), expert compute time,
// held experts, loaded placement version, data-path bytes in and out, dispatch errors.
#pragma once

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/checkpoint/model_config.h"
#include "core/obs/metrics.h"
#include "expert_node/expert_service.h"

namespace moemesh::expert_node {

class ExpertNodeMetrics {
 public:
  // Registers the node's families in `registry`; (layer, expert) row series of every MoE layer
  // start at zero.
  ExpertNodeMetrics(std::shared_ptr<obs::MetricsRegistry> registry,
                    const checkpoint::ModelConfig& config);
  ~ExpertNodeMetrics();  // stops reading the watched service

  // Gauges and error counters read `service` at scrape time (until destruction). Not owned.
  void Watch(const ExpertService* service);
  // One OK dispatch (from ExpertService's observer).
  void OnDispatch(const DispatchObservation& observation);
  // Expert weights read from the checkpoint for a new placement share (bytes).
  void OnExpertsLoaded(int64_t bytes);

 private:
  struct Watched {
    absl::Mutex mutex;
    const ExpertService* service ABSL_GUARDED_BY(mutex) = nullptr;
    ExpertServiceCounters seen ABSL_GUARDED_BY(mutex);
  };
  std::shared_ptr<obs::MetricsRegistry> registry_;
  obs::LayerExpertCounters rows_;
  prometheus::Histogram* compute_seconds_;
  prometheus::Counter* bytes_received_;
  prometheus::Counter* bytes_sent_;
  prometheus::Counter* dispatches_ok_;
  prometheus::Counter* weights_loaded_bytes_;
  prometheus::Counter* dispatch_rows_;
  std::shared_ptr<Watched> watched_;
};

}  // namespace moemesh::expert_node
