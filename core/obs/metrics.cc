#include "core/obs/metrics.h"

#include <exception>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace moemesh::obs {

const std::vector<double>& TimeToFirstTokenBuckets() {
  static const std::vector<double> kBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                               0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                               20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return kBuckets;
}

const std::vector<double>& InterTokenLatencyBuckets() {
  static const std::vector<double> kBuckets = {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,
                                               0.3,  0.4,   0.5,  0.75,  1.0,  2.5,  5.0,
                                               7.5,  10.0,  20.0, 40.0,  80.0};
  return kBuckets;
}

const std::vector<double>& E2eRequestLatencyBuckets() {
  static const std::vector<double> kBuckets = {0.3,  0.5,  0.8,   1.0,   1.5,   2.0,    2.5,
                                               5.0,  10.0, 15.0,  20.0,  30.0,  40.0,   50.0,
                                               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return kBuckets;
}

const std::vector<double>& ShortDurationBuckets() {
  static const std::vector<double> kBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                               0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                               0.5,     1.0,    2.5,     5.0,    10.0};
  return kBuckets;
}

MetricsRegistry::MetricsRegistry() : registry_(std::make_shared<prometheus::Registry>()) {}

void MetricsRegistry::AddRefresh(std::function<void()> refresh) {
  absl::MutexLock lock(&mutex_);
  refresh_.push_back(std::move(refresh));
}

std::vector<prometheus::MetricFamily> MetricsRegistry::Collect() const {
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& refresh : refresh_) refresh();
  }
  return registry_->Collect();
}

std::string MetricsRegistry::SerializeText() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, Collect());
  return out.str();
}

prometheus::Family<prometheus::Counter>& MetricsRegistry::Counter(const std::string& name,
                                                                  const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& MetricsRegistry::Gauge(const std::string& name,
                                                              const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& MetricsRegistry::Histogram(const std::string& name,
                                                                      const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
}

LayerExpertCounters::LayerExpertCounters(prometheus::Family<prometheus::Counter>& family,
                                         const std::vector<int>& layers, int experts)
    : experts_(experts) {
  for (int layer : layers) {
    if (layer < 0) continue;
    if (static_cast<size_t>(layer) >= by_layer_.size()) by_layer_.resize(layer + 1);
    by_layer_[layer].resize(experts, nullptr);
    for (int expert = 0; expert < experts; ++expert) {
      by_layer_[layer][expert] =
          &family.Add({{"layer", absl::StrCat(layer)}, {"expert", absl::StrCat(expert)}});
    }
  }
}

void LayerExpertCounters::Add(int layer, int expert, double value) {
  if (layer < 0 || static_cast<size_t>(layer) >= by_layer_.size()) return;
  if (expert < 0 || expert >= static_cast<int>(by_layer_[layer].size())) return;
  if (prometheus::Counter* counter = by_layer_[layer][expert]) counter->Increment(value);
}

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    const std::string& host, int port, std::shared_ptr<MetricsRegistry> registry) {
  std::unique_ptr<MetricsExposer> exposer(new MetricsExposer());
  exposer->host_ = host;
  exposer->registry_ = std::move(registry);
  try {
    exposer->exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port),
                                                              /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", e.what()));
  }
  exposer->exposer_->RegisterCollectable(exposer->registry_);
  const std::vector<int> ports = exposer->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", host, ":", port));
  }
  exposer->port_ = ports.front();
  return exposer;
}

std::string MetricsExposer::address() const { return absl::StrCat(host_, ":", port_); }

absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(const std::string& host, int port) {
  MetricsEndpoint endpoint;
  if (port < 0) return endpoint;
  endpoint.registry = std::make_shared<MetricsRegistry>();
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer =
      MetricsExposer::Start(host, port, endpoint.registry);
  if (!exposer.ok()) return exposer.status();
  endpoint.exposer = *std::move(exposer);
  return endpoint;
}

}  // namespace moemesh::obs
