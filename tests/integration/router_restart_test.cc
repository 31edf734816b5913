// The router restarted under load (issue 9, point 7), over real processes: SIGKILL the router
// while streams run, start a new one on the same ports; the nodes register again with what they
// hold, the new router adopts that as its placement (every expert node's
// moemesh_expert_weights_loaded_bytes_total stays where it was: no expert is read from the
// checkpoint again), the streams that were in flight at the router end with their connections
// (the attention node frees them), and new requests give the golden tokens.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

using Clock = std::chrono::steady_clock;

const json& Prompts() { return TinyR1Goldens()["results"]; }

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string Body(const json& prompt, int max_tokens, bool stream) {
  json body = {{"model", "tiny-r1"},      {"prompt", prompt["ids"]}, {"max_tokens", max_tokens},
               {"temperature", 0},        {"return_token_ids", true}, {"ignore_eos", true}};
  if (stream) body["stream"] = true;
  return body.dump();
}

// Expert weight bytes every expert node has read from the checkpoint so far (-1: no answer).
std::vector<double> LoadedBytes(Cluster& cluster) {
  std::vector<double> bytes;
  for (int i = 0; i < cluster.expert_count(); ++i) {
    const HttpResult metrics = Cluster::GetFrom(cluster.ExpertMetricsAddress(i), "/metrics");
    bytes.push_back(metrics.status == 200
                        ? MetricIn(metrics.body, "moemesh_expert_weights_loaded_bytes_total ")
                        : -1);
  }
  return bytes;
}

// (layer, expert) -> the set of node ids holding it in the committed placement.
std::map<std::pair<int, int>, std::set<std::string>> Assignment(Cluster& cluster) {
  std::map<std::pair<int, int>, std::set<std::string>> out;
  const json placement = cluster.Get("/v1/placement").Json();
  if (!placement.is_object() || !placement.contains("committed")) return out;
  for (const json& entry : placement["committed"]["experts"]) {
    auto& nodes = out[{entry["layer"].get<int>(), entry["expert"].get<int>()}];
    for (const json& id : entry["nodes"]) nodes.insert(id.get<std::string>());
  }
  return out;
}

// Streams `prompt` and counts the token chunks; true when it ended with [DONE].
bool StreamCounting(Cluster& cluster, const json& prompt, int max_tokens,
                    std::atomic<int>& tokens) {
  bool done = false;
  cluster.PostStream(
      "/v1/completions", Body(prompt, max_tokens, true),
      [&](const std::string& data) {
        if (data == "[DONE]") {
          done = true;
        } else if (data.find("\"token_ids\"") != std::string::npos) {
          ++tokens;
        }
        return true;
      },
      /*timeout_seconds=*/120);
  return done;
}

TEST(RouterRestart, NodesComeBackWithoutReloadingExpertsAndNewRequestsWork) {
  // Two replicas of every expert over three nodes: the new router may adopt from the first two
  // nodes that register again and take the third one's experts as replicas when it does.
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 3,
                   .router_flags = {"--min-replicas", "2"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const auto before = Assignment(cluster);
  ASSERT_FALSE(before.empty());
  const std::vector<double> loaded_before = LoadedBytes(cluster);
  for (double bytes : loaded_before) ASSERT_GT(bytes, 0) << "no expert weights counted";

  // A few streams under way, then the router dies.
  constexpr int kClients = 4;
  std::atomic<int> tokens{0};
  std::atomic<int> completed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      if (StreamCounting(cluster, Prompts()[c % Prompts().size()], 1000, tokens)) ++completed;
    });
  }
  const auto start = Clock::now();
  while (tokens < 2 * kClients && SecondsSince(start) < 120) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(tokens.load(), 2 * kClients) << "the streams did not start";
  cluster.KillRouter();  // from the main thread (the harness forks from it)
  for (std::thread& client : clients) client.join();
  // The streams were in flight at the router: lost with their connections.
  EXPECT_EQ(completed.load(), 0) << "a 1000-token stream finished before the router was killed";

  std::string why;
  ASSERT_TRUE(cluster.RestartRouter(&why)) << why;
  ASSERT_TRUE(cluster.WaitReady(60, &why)) << why << "\n" << cluster.LogTails();
  // The placement was rebuilt from what the nodes hold: same replicas, nothing read again. (A
  // node that registers again late joins the adopted placement as a replica of what it holds.)
  const auto adopt_start = Clock::now();
  while (Assignment(cluster) != before && SecondsSince(adopt_start) < 30) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(Assignment(cluster), before);
  EXPECT_EQ(LoadedBytes(cluster), loaded_before);
  const HttpResult metrics = cluster.Get("/metrics");
  EXPECT_EQ(MetricIn(metrics.body, "moemesh_adopted_replicas_total "),
            static_cast<double>(2 * before.size()))
      << metrics.body.substr(0, 400);
  // The attention node dropped the sequences whose router connection broke.
  const auto drop_start = Clock::now();
  while (cluster.AttentionStatus(0).running != 0 && SecondsSince(drop_start) < 30) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(cluster.AttentionStatus(0).running, 0);

  // New requests (concurrent, then each golden prompt) give the golden tokens.
  std::vector<std::thread> after;
  std::mutex mutex;
  std::vector<std::string> failures;
  for (size_t i = 0; i < Prompts().size(); ++i) {
    after.emplace_back([&, i] {
      const json& prompt = Prompts()[i];
      const HttpResult result = cluster.Post("/v1/completions", Body(prompt, 24, false));
      const json body = result.Json();
      std::string failure;
      if (result.status != 200 || !body.contains("choices")) {
        failure = "HTTP " + std::to_string(result.status) + " " + result.body;
      } else {
        failure = CompareGreedy(
            prompt, body["choices"][0]["token_ids"].get<std::vector<int64_t>>());
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (!failure.empty()) failures.push_back(prompt["name"].get<std::string>() + ": " + failure);
    });
  }
  for (std::thread& thread : after) thread.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " wrong, first: "
                                << (failures.empty() ? "" : failures.front());
  // Still nothing read again (no re-plan moved an expert after the requests either).
  EXPECT_EQ(LoadedBytes(cluster), loaded_before);
  EXPECT_EQ(Assignment(cluster), before);
}

}  // namespace
}  // namespace moemesh::integration
