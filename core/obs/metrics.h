// Prometheus metrics for moemesh services (prometheus-cpp): a per-process registry whose gauges
// can be refreshed at scrape time, the histogram bucket edges vLLM uses for the same quantities,
// an exposer serving /metrics on a separate port (gRPC services), and text serialization (the
// router serves /metrics on its own HTTP port).
//
// Names follow Prometheus conventions: prefix moemesh_, snake case, _total on counters, base
// units (seconds, bytes).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moemesh::obs {

// vLLM's bucket edges (vllm/engine/metrics.py): time to first token, inter-token latency
// (vLLM's time_per_output_token) and end-to-end request latency, in seconds.
const std::vector<double>& TimeToFirstTokenBuckets();
const std::vector<double>& InterTokenLatencyBuckets();
const std::vector<double>& E2eRequestLatencyBuckets();
// Short internal durations (step phases, dispatch round trips, expert compute): 50 us .. 10 s.
const std::vector<double>& ShortDurationBuckets();

// The metrics of one process. Collect() first runs the refresh callbacks (which set gauges from
// live state: queue lengths, cache usage, placement version), then collects the registry.
// Thread-safe.
class MetricsRegistry : public prometheus::Collectable {
 public:
  MetricsRegistry();
  prometheus::Registry& registry() { return *registry_; }
  // Runs `refresh` before every collection (from the scraping thread).
  void AddRefresh(std::function<void()> refresh);
  std::vector<prometheus::MetricFamily> Collect() const override;
  // The Prometheus text exposition format (version 0.0.4) of Collect().
  std::string SerializeText() const;

  // Shorthands for the families (names and help as given).
  prometheus::Family<prometheus::Counter>& Counter(const std::string& name,
                                                   const std::string& help);
  prometheus::Family<prometheus::Gauge>& Gauge(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Histogram>& Histogram(const std::string& name,
                                                       const std::string& help);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mutex_;
  std::vector<std::function<void()>> refresh_ ABSL_GUARDED_BY(mutex_);
};

// Counters indexed by (layer, expert), created up front (all zero) so that sums over layers see
// every series: `moemesh_expert_routed_tokens_total{layer,expert}` and the like.
class LayerExpertCounters {
 public:
  // Series for every layer in `layers` and expert 0 .. experts - 1.
  LayerExpertCounters(prometheus::Family<prometheus::Counter>& family,
                      const std::vector<int>& layers, int experts);
  // Adds `value` to (layer, expert); ignores pairs outside the table.
  void Add(int layer, int expert, double value);

 private:
  int experts_ = 0;
  std::vector<std::vector<prometheus::Counter*>> by_layer_;  // [layer][expert], null if absent
};

// Serves GET /metrics of `registry` on host:port (port 0 picks a free one) with civetweb.
class MetricsExposer {
 public:
  // Errors: Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      const std::string& host, int port, std::shared_ptr<MetricsRegistry> registry);
  int port() const { return port_; }
  std::string address() const;  // host:port

 private:
  MetricsExposer() = default;
  std::string host_;
  int port_ = 0;
  std::shared_ptr<MetricsRegistry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// A node binary's metrics: a registry and its /metrics exposer on host:port (port 0 picks a free
// one). `port` < 0 turns metrics off: both members stay null. Errors: those of
// MetricsExposer::Start.
struct MetricsEndpoint {
  std::shared_ptr<MetricsRegistry> registry;
  std::unique_ptr<MetricsExposer> exposer;
};
absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(const std::string& host, int port);

}  // namespace moemesh::obs
