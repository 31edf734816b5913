// deploy/: the Prometheus alert rules and scrape config pass promtool, and the Grafana dashboard
// JSON parses and names the panels an operator needs.
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/metrics/tool_util.h"

namespace moemesh::integration {
namespace {

const std::string kDeploy = std::string(MOEMESH_SOURCE_DIR) + "/deploy";

TEST(DeployConfigTest, AlertRulesPassPromtool) {
  const std::string promtool = FindTool("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  std::string output;
  EXPECT_EQ(RunCommand(promtool + " check rules " + kDeploy + "/prometheus/alerts.yml", &output), 0)
      << output;
  EXPECT_NE(output.find("SUCCESS: 4 rules found"), std::string::npos) << output;
  for (const char* alert :
       {"MoemeshExpertNodeDown", "MoemeshExpertRedundancyLost", "MoemeshExpertLoadImbalanced",
        "MoemeshTimeToFirstTokenHigh"}) {
    std::ifstream file(kDeploy + "/prometheus/alerts.yml");
    std::stringstream text;
    text << file.rdbuf();
    EXPECT_NE(text.str().find(alert), std::string::npos) << alert;
  }
}

TEST(DeployConfigTest, ScrapeConfigPassesPromtool) {
  const std::string promtool = FindTool("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  std::string output;
  EXPECT_EQ(RunCommand(promtool + " check config " + kDeploy + "/prometheus/prometheus.yml", &output),
            0)
      << output;
}

TEST(DeployConfigTest, GrafanaDashboardParsesAndNamesItsPanels) {
  std::ifstream file(kDeploy + "/grafana/moemesh-dashboard.json");
  ASSERT_TRUE(file.good());
  const nlohmann::json dashboard = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << "the dashboard JSON does not parse";
  ASSERT_TRUE(dashboard.contains("panels"));
  std::set<std::string> titles;
  std::string exprs;
  std::set<std::string> types;
  for (const nlohmann::json& panel : dashboard["panels"]) {
    ASSERT_TRUE(panel.contains("title"));
    titles.insert(panel["title"].get<std::string>());
    types.insert(panel.value("type", ""));
    for (const nlohmann::json& target : panel.value("targets", nlohmann::json::array())) {
      exprs += target.value("expr", "") + "\n";
    }
  }
  auto has_title = [&](const std::string& part) {
    for (const std::string& title : titles) {
      if (title.find(part) != std::string::npos) return true;
    }
    return false;
  };
  for (const char* part : {"Time to first token", "Inter-token latency", "End-to-end request latency",
                           "Tokens per second", "KV cache usage", "Expert load heatmap",
                           "balancedness"}) {
    EXPECT_TRUE(has_title(part)) << "no panel titled like '" << part << "'";
  }
  EXPECT_EQ(types.count("heatmap"), 1u);
  for (const char* metric :
       {"moemesh_time_to_first_token_seconds_bucket", "moemesh_inter_token_latency_seconds_bucket",
        "moemesh_e2e_request_latency_seconds_bucket", "moemesh_prompt_tokens_total",
        "moemesh_generation_tokens_total", "moemesh_kv_cache_usage_perc",
        "moemesh_expert_routed_tokens_total", "moemesh_layer_balancedness"}) {
    EXPECT_NE(exprs.find(metric), std::string::npos) << metric << " is not graphed";
  }
}

}  // namespace
}  // namespace moemesh::integration
