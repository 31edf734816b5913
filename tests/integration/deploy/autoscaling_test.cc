// The expert pool's autoscaling signal over a real cluster and a real Prometheus: the HPA's
// metric is what prometheus-adapter computes with the committed rule
// (components/monitoring/prometheus-adapter-rules.yaml) for the base HPA's metric, over expert
// nodes scraped with the `namespace` and `pod` labels a PodMonitor gives. Idle it is 0 for every
// pod and the HPA formula keeps the pool at minReplicas; under load every pod's value rises
// by at least its routed rows over the rate window, and the formula asks for more nodes: the
// test starts them with the local overlay's flags and they join while clients keep getting the
// goldens' tokens; a minute after the load the value is 0 again, the formula asks for the
// minimum, and the added nodes get SIGTERM, drain and exit, again without a failed request.
#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
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
#include "tests/integration/deploy/manifest_command.h"
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

// Clients sending the goldens' prompts (greedy, their 24-token continuations) in a loop until
// stopped; every answer must be a 200 with the goldens' tokens (the single process's).
class GoldenClients {
 public:
  GoldenClients(Cluster& cluster, int count) {
    for (int c = 0; c < count; ++c) {
      threads_.emplace_back([this, &cluster, c] {
        const json& prompts = TinyR1Goldens()["results"];
        for (size_t i = c; !stop_; ++i) {
          const json& prompt = prompts[i % prompts.size()];
          const json body = {{"model", "tiny-r1"},   {"prompt", prompt["ids"]},
                             {"max_tokens", 24},     {"temperature", 0},
                             {"ignore_eos", true},   {"return_token_ids", true}};
          const HttpResult result = cluster.Post("/v1/completions", body.dump());
          std::string failure;
          if (result.status != 200) {
            failure = "status " + std::to_string(result.status) + ": " + result.body + result.error;
          } else {
            failure = CompareGreedy(
                prompt, result.Json()["choices"][0]["token_ids"].get<std::vector<int64_t>>());
          }
          std::lock_guard<std::mutex> lock(mutex_);
          if (!failure.empty()) failures_.push_back(failure);
          ++completed_;
        }
      });
    }
  }
  ~GoldenClients() { Stop(); }
  void Stop() {
    stop_ = true;
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  // Waits (at most 60 s) until `more` further requests completed.
  void WaitCompleted(int more) {
    const int goal = completed() + more;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (completed() < goal && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  int completed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return completed_;
  }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failures_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  int completed_ = 0;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};

// True when expert node `id` holds a replica in the router's committed placement.
bool HoldsReplicas(Cluster& cluster, const std::string& id) {
  const json placement = cluster.Get("/v1/placement").Json();
  if (!placement.is_object()) return false;
  for (const json& entry : placement["committed"]["experts"]) {
    for (const json& node : entry["nodes"]) {
      if (node == id) return true;
    }
  }
  return false;
}

bool WaitHolds(Cluster& cluster, const std::string& id, bool holds, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (HoldsReplicas(cluster, id) == holds) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The flags the local overlay gives an expert node beyond those the harness sets itself
// (model, router, address, name, metrics port), with its ConfigMap's values.
std::vector<std::string> ManifestExpertFlags(std::string* error) {
  const std::string dir = TempDir("moemesh-autoscaling-render-");
  std::string output;
  if (RunCommand("kubectl kustomize " + kSource + "/deploy/k8s/overlays/local > " + dir +
                     "/local.yaml",
                 &output) != 0 ||
      RunCommand("node " + kValidator + " " + dir + "/local.yaml", &output, false) != 0) {
    *error = "cannot render the local overlay: " + output;
    return {};
  }
  const json summary = json::parse(output, nullptr, false);
  const std::vector<std::string> argv =
      ManifestCommand(summary, "StatefulSet", "moemesh-expert-node", "expert-node",
                      {{"POD_IP", "127.0.0.1"}, {"POD_NAME", "x"}}, {}, error);
  std::vector<std::string> flags;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string flag = argv[i].substr(0, argv[i].find('='));
    // Transport security is the harness's (mTLS with the test CA), not the overlay's.
    const bool security = flag == "--insecure-plaintext" || flag.rfind("--tls-", 0) == 0;
    if (flag != "--model" && flag != "--router" && flag != "--host" && flag != "--port" &&
        flag != "--node-name" && flag != "--metrics-port" && !security) {
      flags.push_back(argv[i]);
    }
  }
  return flags;
}

TEST(ExpertPoolAutoscalingTest, AdapterQueryFollowsTheLoadAndTheFormulaAsksForMoreNodes) {
  const std::string prometheus = FindTool("prometheus");
  if (prometheus.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";
  if (FindTool("node").empty() ||
      !std::ifstream(kSource + "/tests/integration/deploy/node_modules/yaml/package.json")) {
    GTEST_SKIP() << "node and the npm yaml package: bash scripts/install-deps.sh --with-tests";
  }
  if (FindTool("kubectl").empty()) GTEST_SKIP() << "kubectl is not installed";
  std::string manifest_error;
  const std::vector<std::string> expert_flags = ManifestExpertFlags(&manifest_error);
  ASSERT_FALSE(expert_flags.empty()) << manifest_error;
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

  // Kubernetes now adds expert nodes: start them with the local overlay's flags (at most 2
  // more: the test machines have 2 cores) while clients keep sending; they join the placement
  // and every answer stays the goldens'.
  const int scale_to = std::min(desired, min_replicas + 2);
  std::vector<int> added;
  {
    GoldenClients clients(cluster, 4);
    clients.WaitCompleted(4);
    for (int n = min_replicas; n < scale_to; ++n) {
      std::string error;
      const int index = cluster.AddExpert(&error, expert_flags);
      ASSERT_GE(index, 0) << error;
      added.push_back(index);
    }
    for (int index : added) {
      EXPECT_TRUE(WaitHolds(cluster, "expert-" + std::to_string(index), true, 60))
          << "expert-" << index << " did not join: " << cluster.Get("/v1/placement").body;
    }
    clients.WaitCompleted(8);
    clients.Stop();
    EXPECT_GE(clients.completed(), 12);
    for (const std::string& failure : clients.failures()) ADD_FAILURE() << "scale-up: " << failure;
  }

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
  std::vector<double> scaled_up(scale_to, 0.0);  // the new nodes idle too
  EXPECT_EQ(HpaDesiredReplicas(scale_to, scaled_up, small_target, min_replicas, max_replicas),
            min_replicas);

  // Kubernetes removes the highest ordinals with SIGTERM: each drains (its experts move to the
  // others first) and exits 0, while clients keep sending and get the goldens' tokens.
  GoldenClients clients(cluster, 4);
  clients.WaitCompleted(4);
  for (auto it = added.rbegin(); it != added.rend(); ++it) {
    cluster.SignalExpert(*it, SIGTERM);
    EXPECT_EQ(cluster.WaitExpertExit(*it, 60), 0) << cluster.ExpertLog(*it);
    EXPECT_FALSE(HoldsReplicas(cluster, "expert-" + std::to_string(*it)));
  }
  clients.WaitCompleted(8);
  clients.Stop();
  EXPECT_GE(clients.completed(), 12);
  for (const std::string& failure : clients.failures()) ADD_FAILURE() << "scale-down: " << failure;
}

}  // namespace
}  // namespace moemesh::integration
