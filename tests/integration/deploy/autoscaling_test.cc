// The expert pool's autoscaling signal over a real cluster and a real Prometheus: the HPA's
// metric is what prometheus-adapter computes with the committed rule
// (components/monitoring/prometheus-adapter-rules.yaml) for the base HPA's metric, over expert
// nodes scraped with the `namespace` and `pod` labels a PodMonitor gives. Idle it is 0 for every
// pod and the HPA formula keeps the pool at minReplicas; under load every pod's value rises
// by at least its routed rows over the rate window, and the formula asks for more nodes; a
// minute after the load it is 0 again and the formula asks for the minimum.
#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/deploy/autoscaling.h"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kSource = MOEMESH_SOURCE_DIR;
const std::string kValidator = kSource + "/tests/integration/deploy/validate_manifests.mjs";

TEST(HpaFormulaTest, ScalesByTheRatioOutsideTheTolerance) {
  // desired = ceil(current x mean / target).
  EXPECT_EQ(HpaDesiredReplicas(2, {3000, 5000}, 2000, 2, 16), 4);
  EXPECT_EQ(HpaDesiredReplicas(4, {100, 100, 100, 100}, 2000, 2, 16), 2);  // min
  EXPECT_EQ(HpaDesiredReplicas(4, {0, 0, 0, 0}, 2000, 2, 16), 2);
  EXPECT_EQ(HpaDesiredReplicas(8, std::vector<double>(8, 10000), 2000, 2, 16), 16);  // max
  EXPECT_EQ(HpaDesiredReplicas(3, {2100, 2100, 2100}, 2000, 2, 16), 3);  // within 10 %
  EXPECT_EQ(HpaDesiredReplicas(3, {2300, 2300, 2300}, 2000, 2, 16), 4);  // ceil(3.45)
  EXPECT_EQ(HpaDesiredReplicas(3, {}, 2000, 2, 16), 3);
}

TEST(HpaFormulaTest, AdapterTemplateExpandsForThePods) {
  EXPECT_EQ(ExpandAdapterQuery("sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
                               "moemesh_expert_rows_total", "moemesh", {"e-0", "e-1"}),
            "sum(rate(moemesh_expert_rows_total{namespace=\"moemesh\",pod=~\"e-0|e-1\"}[1m]))"
            " by (pod)");
}

// Any YAML file as JSON (all documents), through the deploy tests' node helper.
json YamlToJson(const std::string& path) {
  std::string output;
  if (RunCommand("node " + kValidator + " --to-json " + path, &output, false) != 0) return nullptr;
  return json::parse(output, nullptr, false);
}

// A Prometheus on a free port scraping the expert nodes every second, each as its pod.
class Prometheus {
 public:
  Prometheus(const std::string& binary, const std::vector<std::string>& experts,
             const std::vector<std::string>& pods) {
    dir_ = TempDir("moemesh-autoscaling-prometheus-");
    port_ = FreePort();
    std::ofstream config(dir_ + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
           << "  - job_name: moemesh-expert-nodes\n    static_configs:\n";
    for (size_t i = 0; i < experts.size(); ++i) {
      config << "      - targets: [\"" << experts[i] << "\"]\n        labels: {namespace: moemesh, "
             << "pod: " << pods[i] << "}\n";
    }
    config.close();
    std::string args;
    for (const std::string& arg :
         {"--config.file=" + dir_ + "/prometheus.yml", "--storage.tsdb.path=" + dir_ + "/data",
          "--web.listen-address=127.0.0.1:" + std::to_string(port_)}) {
      args += arg + '\0';
    }
    pid_ = SpawnProcess(binary, args, dir_ + "/prometheus.log");
  }
  ~Prometheus() {
    StopProcess(pid_);
    std::string ignored;
    RunCommand("rm -rf '" + dir_ + "'", &ignored);
  }
  bool WaitReady(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(1);
    while (Clock::now() < deadline) {
      if (auto result = client.Get("/-/ready"); result && result->status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  // pod -> value of an instant query (at Prometheus's now).
  std::map<std::string, double> ByPod(const std::string& promql) {
    std::map<std::string, double> values;
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(10);
    auto result = client.Get("/api/v1/query", httplib::Params{{"query", promql}}, {});
    if (!result || result->status != 200) return values;
    const json body = json::parse(result->body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return values;
    for (const json& sample : body["data"]["result"]) {
      values[sample["metric"].value("pod", "")] = std::stod(sample["value"][1].get<std::string>());
    }
    return values;
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

std::vector<double> Values(const std::map<std::string, double>& by_pod) {
  std::vector<double> values;
  for (const auto& [pod, value] : by_pod) values.push_back(value);
  return values;
}

TEST(ExpertPoolAutoscalingTest, AdapterQueryFollowsTheLoadAndTheFormulaAsksForMoreNodes) {
  const std::string prometheus = FindTool("prometheus");
  if (prometheus.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";
  if (FindTool("node").empty() ||
      !std::ifstream(kSource + "/tests/integration/deploy/node_modules/yaml/package.json")) {
    GTEST_SKIP() << "node and the npm yaml package: bash scripts/install-deps.sh --with-tests";
  }
  // The base HPA of the expert pool and the adapter rule that serves its metric.
  const json base = YamlToJson(kSource + "/deploy/k8s/base/autoscaling.yaml");
  ASSERT_TRUE(base.is_array());
  json hpa;
  for (const json& object : base) {
    if (object["metadata"]["name"] == "moemesh-expert-node") hpa = object;
  }
  ASSERT_TRUE(hpa.is_object());
  const std::string metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"];
  const double target =
      std::stod(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"].get<std::string>());
  const int min_replicas = hpa["spec"]["minReplicas"];
  const int max_replicas = hpa["spec"]["maxReplicas"];
  const json rules_map =
      YamlToJson(kSource + "/deploy/k8s/components/monitoring/prometheus-adapter-rules.yaml");
  ASSERT_TRUE(rules_map.is_array());
  const std::string adapter_config = TempDir("moemesh-adapter-") + "/config.yaml";
  std::ofstream(adapter_config) << rules_map[0]["data"]["config.yaml"].get<std::string>();
  const json adapter = YamlToJson(adapter_config);
  std::string metrics_query, series;
  for (const json& rule : adapter[0]["rules"]) {
    if (rule["name"]["as"] == metric) {
      metrics_query = rule["metricsQuery"];
      series = rule["seriesQuery"].get<std::string>().substr(0, rule["seriesQuery"].get<std::string>().find('{'));
    }
  }
  ASSERT_FALSE(metrics_query.empty()) << "no adapter rule serves " << metric;

  Cluster cluster({.attention_nodes = 1, .expert_nodes = min_replicas});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const HttpResult targets = cluster.Get("/v1/metrics/targets");
  ASSERT_EQ(targets.status, 200) << targets.body;
  std::vector<std::string> experts, pods;
  for (const json& group : targets.Json()) {
    if (group["labels"]["kind"] != "expert") continue;
    for (const json& target_address : group["targets"]) {
      experts.push_back(target_address);
      pods.push_back("moemesh-expert-node-" + std::to_string(pods.size()));
    }
  }
  ASSERT_EQ(static_cast<int>(experts.size()), min_replicas);
  Prometheus server(prometheus, experts, pods);
  ASSERT_TRUE(server.WaitReady(30));
  const std::string query = ExpandAdapterQuery(metrics_query, series, "moemesh", pods);

  // Idle: one series per pod, all 0 (rate needs two scrapes); the pool stays at its minimum.
  std::map<std::string, double> idle;
  for (int i = 0; i < 60 && idle.size() < pods.size(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    idle = server.ByPod(query);
  }
  ASSERT_EQ(idle.size(), pods.size()) << query;
  for (const auto& [pod, value] : idle) EXPECT_EQ(value, 0.0) << pod;
  EXPECT_EQ(HpaDesiredReplicas(min_replicas, Values(idle), target, min_replicas, max_replicas),
            min_replicas);

  // Load: the goldens' prompts, a few tokens each.
  const auto load_start = Clock::now();
  for (const json& prompt : TinyR1Goldens()["results"]) {
    const json body = {{"model", "tiny-r1"}, {"prompt", prompt["ids"]}, {"max_tokens", 4},
                       {"temperature", 0}};
    const HttpResult result = cluster.Post("/v1/completions", body.dump());
    ASSERT_EQ(result.status, 200) << result.body;
  }
  // Every routed row scraped: the pods' counters stop moving at their final values.
  std::map<std::string, double> rows, previous;
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    rows = server.ByPod("sum by (pod) (" + series + ")");
    if (!rows.empty() && rows == previous) break;
    previous = rows;
  }
  const std::map<std::string, double> loaded = server.ByPod(query);
  const double window_seconds =
      std::chrono::duration<double>(Clock::now() - load_start).count();
  ASSERT_EQ(loaded.size(), pods.size());
  for (const std::string& pod : pods) {
    EXPECT_GT(rows[pod], 0.0) << pod << " computed no rows";
    EXPECT_GT(loaded.at(pod), 0.0) << pod;
  }
  if (window_seconds > 50) {
    GTEST_SKIP() << "the load took " << window_seconds
                 << " s, longer than the adapter's 1 m rate window allows to bound";
  }
  // The whole load lies inside the query's 1-minute window, which starts at an idle sample:
  // each pod's rate is at least its rows / 60 s (Prometheus only extrapolates outwards).
  std::vector<double> lower_bounds;
  for (const std::string& pod : pods) {
    EXPECT_GE(loaded.at(pod), rows[pod] / 60.0 * 0.999) << pod;
    lower_bounds.push_back(rows[pod] / 60.0);
  }
  // Rising load: with a per-node target a third of that guaranteed rate, the formula asks for
  // at least three times the nodes (capped at the HPA's maximum).
  double mean_bound = 0;
  for (double bound : lower_bounds) mean_bound += bound / static_cast<double>(lower_bounds.size());
  const double small_target = mean_bound / 3;
  const int desired =
      HpaDesiredReplicas(min_replicas, Values(loaded), small_target, min_replicas, max_replicas);
  EXPECT_GE(desired, std::min(max_replicas, 3 * min_replicas));
  std::printf("adapter query: %s\nidle %s, loaded %s rows/s per pod; rows %s; manifest target "
              "%.0f -> %d nodes, target %.1f -> %d nodes\n",
              query.c_str(), json(idle).dump().c_str(), json(loaded).dump().c_str(),
              json(rows).dump().c_str(), target,
              HpaDesiredReplicas(min_replicas, Values(loaded), target, min_replicas, max_replicas),
              small_target, desired);

  // Falling load: once the window holds no rows (a minute after the last), every pod's value
  // is back to 0 and the formula, from the scaled-up count, returns to the minimum.
  std::map<std::string, double> after;
  for (int i = 0; i < 60; ++i) {  // at most 90 s
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    after = server.ByPod(query);
    bool zero = after.size() == pods.size();
    for (const auto& [pod, value] : after) zero = zero && value == 0.0;
    if (zero) break;
  }
  ASSERT_EQ(after.size(), pods.size());
  for (const auto& [pod, value] : after) EXPECT_EQ(value, 0.0) << pod;
  std::vector<double> scaled_up(desired, 0.0);  // the new nodes idle too
  EXPECT_EQ(HpaDesiredReplicas(desired, scaled_up, small_target, min_replicas, max_replicas),
            min_replicas);
}

}  // namespace
}  // namespace moemesh::integration
