// What an autoscaler computes from the deploy/k8s rules, for tests that drive a real cluster:
// prometheus-adapter's query template expanded for a set of pods, and the
// HorizontalPodAutoscaler's replica formula.
#pragma once

#include <string>
#include <vector>

namespace moemesh::integration {

// prometheus-adapter's metricsQuery with <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>
// replaced as the adapter does for one HPA request: the series name, the label matchers of
// the namespace and pods (namespace="ns",pod=~"a|b") and the group-by label ("pod").
std::string ExpandAdapterQuery(const std::string& metrics_query, const std::string& series,
                               const std::string& namespace_name,
                               const std::vector<std::string>& pods);

// The HPA's desired replicas for a Pods metric with an AverageValue target (Kubernetes'
// horizontal pod autoscaler algorithm): ratio = mean(per_pod) / target; within `tolerance`
// of 1 the count stays `current`, else desired = ceil(current x ratio), then clamped to
// [min_replicas, max_replicas]. With no values the count stays. (Behaviour windows and
// policies, which limit how fast the count moves, are not modelled.)
int HpaDesiredReplicas(int current, const std::vector<double>& per_pod, double target,
                       int min_replicas, int max_replicas, double tolerance = 0.1);

}  // namespace moemesh::integration
