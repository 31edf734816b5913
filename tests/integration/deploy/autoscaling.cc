#include "tests/integration/deploy/autoscaling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moemesh::integration {
namespace {

void ReplaceAll(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

}  // namespace

std::string ExpandAdapterQuery(const std::string& metrics_query, const std::string& series,
                               const std::string& namespace_name,
                               const std::vector<std::string>& pods) {
  std::string pod_regex;
  for (const std::string& pod : pods) pod_regex += (pod_regex.empty() ? "" : "|") + pod;
  std::string query = metrics_query;
  ReplaceAll(query, "<<.Series>>", series);
  ReplaceAll(query, "<<.LabelMatchers>>",
             "namespace=\"" + namespace_name + "\",pod=~\"" + pod_regex + "\"");
  ReplaceAll(query, "<<.GroupBy>>", "pod");
  return query;
}

int HpaDesiredReplicas(int current, const std::vector<double>& per_pod, double target,
                       int min_replicas, int max_replicas, double tolerance) {
  int desired = current;
  if (!per_pod.empty() && target > 0) {
    const double mean =
        std::accumulate(per_pod.begin(), per_pod.end(), 0.0) / static_cast<double>(per_pod.size());
    const double ratio = mean / target;
    if (std::fabs(ratio - 1.0) > tolerance) {
      desired = static_cast<int>(std::ceil(ratio * current));
    }
  }
  return std::clamp(desired, min_replicas, max_replicas);
}

}  // namespace moemesh::integration
