// Metrics end to end over real processes: a real Prometheus server scrapes a local cluster
// (router + 1 attention node + 2 expert nodes) while the goldens' prompts are sent with
// max_tokens 1, so that only prompt positions go through the model. PromQL then shows, per MoE
// layer, routed-token counters summing to N x num_experts_per_tok, the expert nodes' row counters
// summing to the same, and per (layer, expert) counts equal to the goldens' gate choices. The
// dashboard test loads /dashboard in headless Chromium, reads its heatmap cells and compares them
// with /v1/experts/load, and saves a screenshot under the build directory.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

using Clock = std::chrono::steady_clock;
using LayerExpert = std::pair<int, int>;

constexpr int kTopK = 4;           // tiny-r1 num_experts_per_tok
constexpr int kExperts = 16;       // n_routed_experts
const std::vector<int> kMoeLayers = {1, 2, 3};

const json& Prompts() { return TinyR1Goldens()["results"]; }

// Sends every golden prompt with max_tokens 1; returns the total prompt tokens N.
int64_t SendGoldenPrompts(Cluster& cluster) {
  int64_t total = 0;
  for (const json& prompt : Prompts()) {
    const json body = {{"model", "tiny-r1"}, {"prompt", prompt["ids"]}, {"max_tokens", 1},
                       {"temperature", 0}};
    const HttpResult result = cluster.Post("/v1/completions", body.dump());
    EXPECT_EQ(result.status, 200) << result.error << result.body;
    total += static_cast<int64_t>(prompt["ids"].size());
    EXPECT_EQ(result.Json()["usage"]["prompt_tokens"], prompt["ids"].size());
  }
  return total;
}

// Routed tokens per (layer, expert) that the goldens' gate choices imply for those prompts.
std::map<LayerExpert, int64_t> GoldenCounts() {
  std::map<LayerExpert, int64_t> counts;
  for (const json& prompt : Prompts()) {
    for (const json& gate : prompt["gates"]) {
      const int layer = gate["layer"].get<int>();
      for (const json& position : gate["experts"]) {
        for (const json& expert : position) ++counts[{layer, expert.get<int>()}];
      }
    }
  }
  return counts;
}

// A Prometheus server on a free port scraping the given targets every second.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& binary, const std::string& router,
                   const std::vector<std::string>& attention,
                   const std::vector<std::string>& experts) {
    dir_ = TempDir("moemesh-prometheus-");
    port_ = FreePort();
    std::ofstream config(dir_ + "/prometheus.yml");
    auto list = [](const std::vector<std::string>& targets) {
      std::string out = "[";
      for (size_t i = 0; i < targets.size(); ++i) out += (i ? ", \"" : "\"") + targets[i] + "\"";
      return out + "]";
    };
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
           << "scrape_configs:\n"
           << "  - job_name: moemesh-router\n    static_configs:\n      - targets: "
           << list({router}) << "\n"
           << "  - job_name: moemesh-attention-nodes\n    static_configs:\n      - targets: "
           << list(attention) << "\n"
           << "  - job_name: moemesh-expert-nodes\n    static_configs:\n      - targets: "
           << list(experts) << "\n";
    config.close();
    std::string args;
    for (const std::string& arg :
         {"--config.file=" + dir_ + "/prometheus.yml", "--storage.tsdb.path=" + dir_ + "/data",
          "--web.listen-address=127.0.0.1:" + std::to_string(port_)}) {
      args += arg + '\0';
    }
    pid_ = SpawnProcess(binary, args, dir_ + "/prometheus.log");
  }
  ~PrometheusServer() {
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

  // Instant query; `result` of the answer's data (vector), or null on failure.
  json Query(const std::string& promql) {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(10);
    auto result = client.Get("/api/v1/query", httplib::Params{{"query", promql}}, {});
    if (!result || result->status != 200) return nullptr;
    const json body = json::parse(result->body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return nullptr;
    return body["data"]["result"];
  }

  // Query result as label value(s) -> value, e.g. {"1": 2992}.
  std::map<std::string, double> QueryBy(const std::string& promql,
                                        const std::vector<std::string>& labels) {
    std::map<std::string, double> values;
    const json result = Query(promql);
    if (!result.is_array()) return values;
    for (const json& sample : result) {
      std::string key;
      for (const std::string& label : labels) {
        key += (key.empty() ? "" : "/") + sample["metric"].value(label, "");
      }
      values[key] = std::stod(sample["value"][1].get<std::string>());
    }
    return values;
  }

  std::string Log() const {
    std::ifstream file(dir_ + "/prometheus.log");
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// The nodes' metrics addresses from the router's service-discovery endpoint.
void MetricsTargets(Cluster& cluster, std::vector<std::string>* attention,
                    std::vector<std::string>* experts) {
  const HttpResult result = cluster.Get("/v1/metrics/targets");
  ASSERT_EQ(result.status, 200) << result.body;
  for (const json& group : result.Json()) {
    for (const json& target : group["targets"]) {
      (group["labels"]["kind"] == "expert" ? experts : attention)->push_back(target);
    }
  }
}

std::map<LayerExpert, int64_t> LoadTotals(const json& load) {
  std::map<LayerExpert, int64_t> totals;
  for (const json& layer : load["layers"]) {
    for (size_t e = 0; e < layer["total"].size(); ++e) {
      totals[{layer["layer"].get<int>(), static_cast<int>(e)}] = layer["total"][e].get<int64_t>();
    }
  }
  return totals;
}

std::map<LayerExpert, int64_t> NonZero(const std::map<LayerExpert, int64_t>& counts) {
  std::map<LayerExpert, int64_t> out;
  for (const auto& [key, value] : counts) {
    if (value != 0) out[key] = value;
  }
  return out;
}

TEST(MetricsIntegrationTest, PrometheusSeesRoutedTokensEqualToPromptsTimesTopKAndGoldenGates) {
  const std::string prometheus = FindTool("prometheus");
  if (prometheus.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ASSERT_TRUE(cluster.WaitReady(60));
  std::vector<std::string> attention, experts;
  ASSERT_NO_FATAL_FAILURE(MetricsTargets(cluster, &attention, &experts));
  ASSERT_EQ(attention.size(), 1u);
  ASSERT_EQ(experts.size(), 2u);

  PrometheusServer server(prometheus, "127.0.0.1:" + std::to_string(cluster.http_port()),
                          attention, experts);
  ASSERT_TRUE(server.WaitReady(30)) << server.Log();

  const int64_t n = SendGoldenPrompts(cluster);
  ASSERT_EQ(n, 748);
  const double expected = static_cast<double>(n * kTopK);

  // Wait until a scrape after the last request is in (counters only grow).
  // Every target, the router's included (scraped on its own schedule), must be in.
  std::map<std::string, double> routed, rows, successes, up;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  auto settled = [&] {
    for (int layer : kMoeLayers) {
      const std::string key = std::to_string(layer);
      if (routed[key] != expected || rows[key] != expected) return false;
    }
    return successes[""] == 6.0 && up[""] == 4.0;
  };
  while (Clock::now() < deadline) {
    routed = server.QueryBy("sum by (layer) (moemesh_expert_routed_tokens_total)", {"layer"});
    rows = server.QueryBy("sum by (layer) (moemesh_expert_rows_total)", {"layer"});
    successes = server.QueryBy("sum(moemesh_request_success_total)", {});
    up = server.QueryBy("count(up == 1)", {});
    if (settled()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  for (int layer : kMoeLayers) {
    const std::string key = std::to_string(layer);
    EXPECT_EQ(routed[key], expected) << "routed tokens of layer " << layer << " (N = " << n << ")";
    EXPECT_EQ(rows[key], expected) << "expert rows of layer " << layer;
  }
  EXPECT_EQ(routed.size(), kMoeLayers.size());  // no series for the dense layer 0

  // Per (layer, expert): the attention node's routing decisions are the goldens' gate choices,
  // and the expert nodes computed exactly those rows.
  const std::map<LayerExpert, int64_t> golden = GoldenCounts();
  std::map<LayerExpert, int64_t> by_expert, rows_by_expert;
  for (const auto& [key, value] : server.QueryBy(
           "sum by (layer, expert) (moemesh_expert_routed_tokens_total)", {"layer", "expert"})) {
    by_expert[{std::stoi(key.substr(0, key.find('/'))), std::stoi(key.substr(key.find('/') + 1))}] =
        static_cast<int64_t>(value);
  }
  for (const auto& [key, value] :
       server.QueryBy("sum by (layer, expert) (moemesh_expert_rows_total)", {"layer", "expert"})) {
    rows_by_expert[{std::stoi(key.substr(0, key.find('/'))),
                    std::stoi(key.substr(key.find('/') + 1))}] = static_cast<int64_t>(value);
  }
  EXPECT_EQ(by_expert.size(), kMoeLayers.size() * kExperts);  // every series exists, zeros too
  EXPECT_EQ(NonZero(by_expert), golden);
  EXPECT_EQ(NonZero(rows_by_expert), golden);

  // Each expert node computed only its placement share (expert e on node e % 2), both nonzero.
  const std::map<std::string, double> per_node =
      server.QueryBy("sum by (instance) (moemesh_expert_rows_total)", {"instance"});
  ASSERT_EQ(per_node.size(), 2u);
  double sum = 0;
  for (const auto& [instance, value] : per_node) {
    EXPECT_GT(value, 0) << instance;
    sum += value;
  }
  EXPECT_EQ(sum, expected * kMoeLayers.size());

  // The router's request metrics saw the same requests.
  EXPECT_EQ(server.QueryBy("moemesh_prompt_tokens_total", {})[""], static_cast<double>(n));
  EXPECT_EQ(server.QueryBy("moemesh_generation_tokens_total", {})[""], 6.0);
  EXPECT_EQ(server.QueryBy("sum(moemesh_request_success_total)", {})[""], 6.0);
  EXPECT_EQ(server.QueryBy("moemesh_time_to_first_token_seconds_count", {})[""], 6.0);
  EXPECT_EQ(server.QueryBy("moemesh_e2e_request_latency_seconds_count", {})[""], 6.0);
  EXPECT_GT(server.QueryBy("moemesh_placement_version", {})[""], 0);
  EXPECT_EQ(server.QueryBy("count(moemesh_layer_balancedness)", {})[""], 3.0);
  EXPECT_EQ(server.QueryBy("sum(moemesh_node_healthy{kind=\"expert\"})", {})[""], 2.0);
  const double kv = server.QueryBy("moemesh_kv_cache_usage_perc", {})[""];
  EXPECT_GE(kv, 0.0);
  EXPECT_LE(kv, 1.0);
  EXPECT_GT(server.QueryBy("sum(moemesh_dispatch_round_trip_seconds_count)", {})[""], 0);
  EXPECT_EQ(server.QueryBy("count(moemesh_dispatch_round_trip_seconds_count)", {})[""], 2.0);
  EXPECT_EQ(server.QueryBy("sum(moemesh_expert_held_experts)", {})[""], 2.0 * 24);
  EXPECT_EQ(server.QueryBy("count(up == 1)", {})[""], 4.0);

  // The router aggregated the same counts from the attention node's heartbeats.
  std::map<LayerExpert, int64_t> load;
  const auto load_deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < load_deadline) {
    load = NonZero(LoadTotals(cluster.Get("/v1/experts/load").Json()));
    if (load == golden) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(load, golden);
}

// Cells of the dashboard's heatmap in a DOM dump: (layer, expert) -> data-total.
std::map<LayerExpert, int64_t> HeatmapCells(const std::string& dom) {
  std::map<LayerExpert, int64_t> cells;
  static const std::regex kTd("<(?:td|rect)[^>]*class=\"cell\"[^>]*>");
  static const std::regex kLayer("data-layer=\"(\\d+)\"");
  static const std::regex kExpert("data-expert=\"(\\d+)\"");
  static const std::regex kTotal("data-total=\"(\\d+)\"");
  static const std::regex kId("id=\"cell-L(\\d+)-E(\\d+)\"");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), kTd); it != std::sregex_iterator();
       ++it) {
    const std::string tag = it->str();
    std::smatch layer, expert, total, id;
    if (!std::regex_search(tag, layer, kLayer) || !std::regex_search(tag, expert, kExpert) ||
        !std::regex_search(tag, total, kTotal) || !std::regex_search(tag, id, kId)) {
      continue;
    }
    if (id[1] != layer[1] || id[2] != expert[1]) continue;
    cells[{std::stoi(layer[1]), std::stoi(expert[1])}] = std::stoll(total[1]);
  }
  return cells;
}

TEST(MetricsIntegrationTest, DashboardHeatmapInHeadlessChromiumMatchesExpertsLoad) {
  std::string chromium = FindTool("chromium");
  if (chromium.empty()) chromium = FindTool("chromium-browser");
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (Debian package chromium)";
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ASSERT_TRUE(cluster.WaitReady(60));
  const int64_t n = SendGoldenPrompts(cluster);

  // Wait until the router has every routed token from the heartbeats.
  json load;
  std::map<LayerExpert, int64_t> totals;
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (Clock::now() < deadline) {
    load = cluster.Get("/v1/experts/load").Json();
    totals = LoadTotals(load);
    int64_t sum = 0;
    for (const auto& [key, value] : totals) sum += value;
    if (sum == n * kTopK * static_cast<int64_t>(kMoeLayers.size())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(totals.size(), kMoeLayers.size() * kExperts) << load.dump();
  EXPECT_EQ(NonZero(totals), GoldenCounts());
  ASSERT_TRUE(load.contains("placement"));
  EXPECT_GT(load["placement"]["version"].get<int64_t>(), 0);
  EXPECT_EQ(load["placement"]["experts"].size(), kMoeLayers.size() * kExperts);

  const std::string url = "http://127.0.0.1:" + std::to_string(cluster.http_port()) + "/dashboard";
  const std::string profile = TempDir("moemesh-chromium-");
  const std::string flags =
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
      " --disable-background-networking --disable-component-update --disable-sync"
      " --disable-dev-shm-usage --user-data-dir=" + profile + " --virtual-time-budget=5000";
  std::string dom;
  const int status = RunCommand("timeout 90 " + chromium + flags + " --dump-dom " + url, &dom,
                                /*with_stderr=*/false);
  ASSERT_EQ(status, 0) << dom;
  ASSERT_NE(dom.find("id=\"heatmap\""), std::string::npos) << dom.substr(0, 2000);
  const std::map<LayerExpert, int64_t> cells = HeatmapCells(dom);
  EXPECT_EQ(cells, totals) << "heatmap cells differ from /v1/experts/load";
  EXPECT_NE(dom.find("id=\"balance-L1\""), std::string::npos);
  EXPECT_EQ(dom.find("<script src"), std::string::npos) << "the dashboard loads an external script";

  const std::string screenshot = std::string(MOEMESH_BINARY_DIR) + "/metrics-dashboard.png";
  unlink(screenshot.c_str());
  std::string output;
  const int shot = RunCommand("timeout 90 " + chromium + flags + " --hide-scrollbars" +
                                  " --window-size=900,560 --screenshot=" + screenshot + " " + url,
                              &output);
  EXPECT_EQ(shot, 0) << output;
  std::ifstream png(screenshot, std::ios::binary | std::ios::ate);
  ASSERT_TRUE(png.good()) << "no screenshot at " << screenshot << ": " << output;
  EXPECT_GT(static_cast<int64_t>(png.tellg()), 10000) << screenshot;
  std::cout << "dashboard screenshot: " << screenshot << "\n";
  std::string ignored;
  RunCommand("rm -rf '" + profile + "'", &ignored);
}

// With --api-key on the router the dashboard's fetches carry `Authorization: Bearer`: the key
// from the address's fragment draws the same heatmap as /v1/experts/load; without a key the
// page shows its key field and says the router wants one, instead of failing silently.
TEST(MetricsIntegrationTest, DashboardWithApiKeyTakesTheKeyFromTheFragment) {
  std::string chromium = FindTool("chromium");
  if (chromium.empty()) chromium = FindTool("chromium-browser");
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (Debian package chromium)";
  const std::string key = "dash-key-0123456789";
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1, .router_flags = {"--api-key", key}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  httplib::Client client("127.0.0.1", cluster.http_port());
  client.set_read_timeout(60, 0);
  const httplib::Headers auth = {{"Authorization", "Bearer " + key}};
  auto completion = client.Post("/v1/completions", auth,
                                R"({"prompt":[0,1,2,3],"max_tokens":1,"temperature":0})",
                                "application/json");
  ASSERT_TRUE(completion) << httplib::to_string(completion.error());
  ASSERT_EQ(completion->status, 200) << completion->body;
  auto unauthorized = client.Get("/v1/experts/load");
  ASSERT_TRUE(unauthorized);
  EXPECT_EQ(unauthorized->status, 401);
  auto wrong = client.Get("/v1/experts/load", {{"Authorization", "Bearer not-" + key}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(json::parse(wrong->body)["error"]["code"], "invalid_api_key") << wrong->body;
  // Every routed token of the request reaches the router with the heartbeats.
  std::map<LayerExpert, int64_t> totals;
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  int64_t sum = 0;
  while (Clock::now() < deadline) {
    auto load = client.Get("/v1/experts/load", auth);
    ASSERT_TRUE(load);
    ASSERT_EQ(load->status, 200) << load->body;
    totals = LoadTotals(json::parse(load->body));
    sum = 0;
    for (const auto& [cell, value] : totals) sum += value;
    // One token generated: the 4 prompt tokens went through the experts of each MoE layer.
    if (sum == 4 * kTopK * static_cast<int64_t>(kMoeLayers.size())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(sum, 4 * kTopK * static_cast<int64_t>(kMoeLayers.size()));

  const std::string url = "http://127.0.0.1:" + std::to_string(cluster.http_port()) + "/dashboard";
  const std::string profile = TempDir("moemesh-chromium-");
  const std::string flags =
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
      " --disable-background-networking --disable-component-update --disable-sync"
      " --disable-dev-shm-usage --user-data-dir=" + profile + " --virtual-time-budget=5000";
  std::string dom;
  ASSERT_EQ(RunCommand("timeout 90 " + chromium + flags + " --dump-dom '" + url + "#key=" + key +
                           "'",
                       &dom, /*with_stderr=*/false),
            0)
      << dom;
  EXPECT_NE(dom.find("data-auth=\"key\""), std::string::npos) << dom.substr(0, 3000);
  EXPECT_EQ(HeatmapCells(dom), totals) << "heatmap cells differ from /v1/experts/load";

  // A fresh profile (no key kept): the page asks for one.
  std::string ignored;
  RunCommand("rm -rf '" + profile + "'", &ignored);
  const std::string fresh = TempDir("moemesh-chromium-");
  const std::string fresh_flags =
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
      " --disable-background-networking --disable-component-update --disable-sync"
      " --disable-dev-shm-usage --user-data-dir=" + fresh + " --virtual-time-budget=5000";
  ASSERT_EQ(RunCommand("timeout 90 " + chromium + fresh_flags + " --dump-dom " + url, &dom,
                       /*with_stderr=*/false),
            0)
      << dom;
  EXPECT_NE(dom.find("data-auth=\"needed\""), std::string::npos) << dom.substr(0, 3000);
  EXPECT_NE(dom.find("<form id=\"keyform\">"), std::string::npos) << "key field not shown";
  EXPECT_NE(dom.find("needs an API key"), std::string::npos);
  EXPECT_TRUE(HeatmapCells(dom).empty());
  RunCommand("rm -rf '" + fresh + "'", &ignored);
}

}  // namespace
}  // namespace moemesh::integration
