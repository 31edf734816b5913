// Structured logs (core/obs/log.h) of real processes: the router, attention node and expert
// nodes write one key=value line per cluster event, and a test can find each with its fields:
// registration, placement versions (published, loaded, installed, committed), an expert node's
// drain (started, finished) and a refused drain, a node lost and rejoined, and request errors
// with the request id (X-Request-Id accepted or generated, echoed in the response).
#include <signal.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream stream(path);
  std::stringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

// Waits up to `seconds` for a line of the log at `path` matching `pattern`; the first match
// (empty when none came).
std::smatch WaitForLine(const std::string& path, const std::string& pattern, double seconds,
                        std::string* text) {
  const std::regex regex(pattern);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  std::smatch match;
  while (true) {
    *text = ReadAll(path);
    if (std::regex_search(*text, match, regex)) return match;
    if (std::chrono::steady_clock::now() > deadline) return std::smatch();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Asserts that the log at `path` gets a line matching `pattern` (an spdlog line: UTC time, level,
// service name); returns the match's first group ("" when it has none or nothing matched).
std::string ExpectLine(const std::string& path, const std::string& level,
                       const std::string& service, const std::string& pattern,
                       double seconds = 30) {
  std::string text;
  const std::string line = "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z " + level + " " +
                           service + ": [^\\n]*" + pattern;
  std::smatch match = WaitForLine(path, line, seconds, &text);
  EXPECT_FALSE(match.empty()) << "no line /" << line << "/ in " << path << ":\n" << text;
  return match.size() > 1 ? match[1].str() : "";
}

TEST(StructuredLogs, NodeEventsAndRequestErrorsCarryTheirFields) {
  // 16 experts per MoE layer, 8 per node: two of the three nodes are needed, one is not enough.
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 3,
                   .expert_flags = {"--max-experts-per-layer", "8"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const std::string router = cluster.log_dir() + "/router.log";
  const std::string attention = cluster.log_dir() + "/attention-0.log";
  const std::string expert0 = cluster.log_dir() + "/expert-0.log";
  const std::string expert1 = cluster.log_dir() + "/expert-1.log";
  const std::string expert2 = cluster.log_dir() + "/expert-2.log";
  const std::string r = "moemesh-router", a = "moemesh-attention-node", e = "moemesh-expert-node";

  // Registration and the first placement, seen from every side.
  ExpectLine(router, "info", r, "node registered node=expert-0 kind=expert address=127\\.0\\.0\\.1:");
  ExpectLine(router, "info", r, "node registered node=attention-0 kind=attention");
  ExpectLine(expert0, "info", e,
             "registered with the control plane node=expert-0 kind=expert router=127\\.0\\.0\\.1:");
  ExpectLine(attention, "info", a, "registered with the control plane node=attention-0 kind=attention");
  // The version published once all three expert nodes serve is the one the attention node
  // installs with no unhealthy node; each expert node logs the version whose share it loaded.
  const std::string serving = ExpectLine(
      router, "info", r, "placement version (\\d+) published placement_version=\\1 expert_nodes=3 serving=3");
  ExpectLine(attention, "info", a,
             "placement version " + serving + " installed placement_version=" + serving +
                 " previous_version=\\d+ expert_nodes=3 unhealthy=0");
  ExpectLine(expert0, "info", e,
             ": placement version (\\d+) loaded node=expert-0 placement_version=\\1 experts=\\d+ "
             "previous_experts=0 read_mib=");

  // Request errors carry the request id: the client's, or one the router made up; both echoed.
  httplib::Client client("127.0.0.1", cluster.http_port());
  client.set_read_timeout(60, 0);
  const std::string bad = R"({"prompt":[1,2],"max_tokens":-3})";
  auto given = client.Post("/v1/completions", {{"X-Request-Id", "it-log-0042"}}, bad,
                           "application/json");
  ASSERT_TRUE(given) << httplib::to_string(given.error());
  EXPECT_EQ(given->status, 400) << given->body;
  EXPECT_EQ(given->get_header_value("X-Request-Id"), "it-log-0042");
  ExpectLine(router, "info", r, "request refused request_id=it-log-0042 status=400 param=max_tokens");
  auto generated = client.Post("/v1/completions", bad, "application/json");
  ASSERT_TRUE(generated) << httplib::to_string(generated.error());
  const std::string id = generated->get_header_value("X-Request-Id");
  ASSERT_FALSE(id.empty());
  EXPECT_NE(id, "it-log-0042");
  ExpectLine(router, "info", r, "request refused request_id=" + id + " status=400");

  // A drain (SIGTERM): asked, re-planned without the node, committed, finished; the node exits 0.
  cluster.SignalExpert(2, SIGTERM);
  ExpectLine(expert2, "info", e, "drain started \\(SIGTERM\\)[^\\n]* node=expert-2");
  ExpectLine(router, "info", r, "drain started node=expert-2 kind=expert placement_version=");
  const std::string drained = ExpectLine(
      router, "info", r, "drain finished node=expert-2 kind=expert placement_version=(\\d+)");
  ExpectLine(router, "info", r,
             "placement version " + drained + " committed placement_version=" + drained +
                 " reasons=drain plan_to_commit_seconds=");
  ExpectLine(expert2, "info", e, "drain finished, exiting node=expert-2 detail=");
  EXPECT_EQ(cluster.WaitExpertExit(2, 60), 0) << ReadAll(expert2);
  // Its heartbeats stop: it left, it was not lost.
  ExpectLine(router, "info", r, "node left after its drain node=expert-2 kind=expert");
  ExpectLine(attention, "info", a,
             "placement version " + drained + " installed placement_version=" + drained +
                 " previous_version=\\d+ expert_nodes=2");

  // A node lost (SIGKILL: its heartbeats stop) and rejoining under its name.
  cluster.KillExpert(0, SIGKILL);
  ExpectLine(router, "warning", r, "node lost node=expert-0 kind=expert address=127\\.0\\.0\\.1:\\d+ silent_for=");
  ExpectLine(router, "warning", r, "expert node lost, re-planning without it node=expert-0 placement_version=");
  std::string error;
  ASSERT_TRUE(cluster.RestartExpert(0, &error)) << error;
  ExpectLine(router, "info", r, "node rejoined \\(restarted\\) node=expert-0 kind=expert");
  ASSERT_TRUE(cluster.WaitReady(60));

  // A refused drain: expert-1 alone cannot go, the other node holds only half the experts.
  cluster.SignalExpert(1, SIGTERM);
  ExpectLine(router, "warning", r,
             "drain refused node=expert-1 kind=expert reason=\"the other expert nodes cannot hold "
             "every expert");
  ExpectLine(expert1, "warning", e, "drain refused, still serving node=expert-1 reason=\"");
  EXPECT_EQ(cluster.WaitExpertExit(1, 1.0), -1) << "the node exited: " << ReadAll(expert1);

  // The cluster still answers.
  HttpResult ok = cluster.Post("/v1/completions", R"({"prompt":[0,1,2],"max_tokens":2,"temperature":0})");
  EXPECT_EQ(ok.status, 200) << ok.body << ok.error;
}

}  // namespace
}  // namespace moemesh::integration
