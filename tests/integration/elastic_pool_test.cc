// The elastic expert pool over real processes: outputs bitwise independent of the placement
// (1 expert node, 3, 3 with redundant experts, a re-plan and a node joining in the middle of a
// generation), zero failed requests under 8 concurrent streams through a forced rebalance, a
// join and a SIGTERM drain, and a drain that would lose experts refused while the node serves.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

const json& Prompts() { return TinyR1Goldens()["results"]; }

// What a completion produced: token ids and, per token, its logprob and top-5 logprobs (the
// logits, normalised: equal floats here mean bitwise equal logits rows).
struct Output {
  std::string error;  // "" when the request succeeded
  std::vector<int64_t> tokens;
  json token_logprobs = json::array();
  json top_logprobs = json::array();
  bool operator==(const Output& other) const {
    return error == other.error && tokens == other.tokens &&
           token_logprobs == other.token_logprobs && top_logprobs == other.top_logprobs;
  }
};

std::string Body(const json& prompt, int max_tokens, bool stream, bool ignore_eos = false) {
  json body = {{"model", "tiny-r1"},      {"prompt", prompt["ids"]}, {"max_tokens", max_tokens},
               {"temperature", 0},        {"return_token_ids", true}, {"logprobs", 5},
               {"ignore_eos", ignore_eos}};
  if (stream) body["stream"] = true;
  return body.dump();
}

void Append(const json& choice, Output& out) {
  if (choice.contains("token_ids")) {
    for (const json& id : choice["token_ids"]) out.tokens.push_back(id.get<int64_t>());
  }
  if (choice.contains("logprobs") && choice["logprobs"].is_object()) {
    for (const json& v : choice["logprobs"]["token_logprobs"]) out.token_logprobs.push_back(v);
    for (const json& v : choice["logprobs"]["top_logprobs"]) out.top_logprobs.push_back(v);
  }
}

Output Complete(Cluster& cluster, const json& prompt, int max_tokens = 24,
                bool ignore_eos = false) {
  Output out;
  const HttpResult result =
      cluster.Post("/v1/completions", Body(prompt, max_tokens, false, ignore_eos));
  if (result.status != 200) {
    out.error = "HTTP " + std::to_string(result.status) + " " + result.error + " " + result.body;
    return out;
  }
  const json body = result.Json();
  if (!body.contains("choices") || body["choices"].empty()) {
    out.error = "no choices in " + result.body;
    return out;
  }
  Append(body["choices"][0], out);
  return out;
}

// Streams one completion; `on_token(count)` runs after every chunk with the tokens so far.
Output Stream(Cluster& cluster, const json& prompt, int max_tokens, bool ignore_eos,
              const std::function<void(size_t)>& on_token = nullptr) {
  Output out;
  bool done = false;
  const HttpResult result = cluster.PostStream(
      "/v1/completions", Body(prompt, max_tokens, true, ignore_eos),
      [&](const std::string& data) {
        if (data == "[DONE]") {
          done = true;
          return true;
        }
        const json chunk = json::parse(data, nullptr, false);
        if (chunk.contains("error")) {
          out.error = "error event: " + data;
          return false;
        }
        if (chunk.contains("choices") && !chunk["choices"].empty()) Append(chunk["choices"][0], out);
        if (on_token) on_token(out.tokens.size());
        return true;
      });
  if (out.error.empty() && (result.status != 200 || !done)) {
    out.error = "stream: HTTP " + std::to_string(result.status) + " " + result.error +
                (done ? "" : " (no [DONE])");
  }
  return out;
}

std::string Golden(const json& prompt, const Output& out) {
  if (!out.error.empty()) return prompt["name"].get<std::string>() + ": " + out.error;
  return CompareGreedy(prompt, out.tokens);
}

json Placement(Cluster& cluster) { return cluster.Get("/v1/placement").Json(); }

// Waits until `predicate(GET /v1/placement)` holds; false after `seconds`.
bool WaitPlacement(Cluster& cluster, double seconds, const std::function<bool(const json&)>& predicate) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    const json placement = Placement(cluster);
    if (placement.is_object() && predicate(placement)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

const json* ExpertNode(const json& placement, const std::string& id) {
  for (const json& node : placement["expert_nodes"]) {
    if (node["node"] == id) return &node;
  }
  return nullptr;
}

// True when `id` holds a replica in the committed placement.
bool HoldsReplicas(const json& placement, const std::string& id) {
  for (const json& entry : placement["committed"]["experts"]) {
    for (const json& node : entry["nodes"]) {
      if (node == id) return true;
    }
  }
  return false;
}

std::vector<Output> RunAll(Cluster& cluster) {
  std::vector<Output> outputs;
  for (const json& prompt : Prompts()) {
    outputs.push_back(Complete(cluster, prompt));
    EXPECT_EQ(Golden(prompt, outputs.back()), "");
  }
  return outputs;
}

TEST(ElasticPool, LogitsBitwiseForOneThreeAndRedundantExperts) {
  std::vector<Output> reference;
  {
    Cluster cluster({.attention_nodes = 1, .expert_nodes = 1});
    ASSERT_TRUE(cluster.ok()) << cluster.error();
    reference = RunAll(cluster);
  }
  {
    Cluster cluster({.attention_nodes = 1, .expert_nodes = 3});
    ASSERT_TRUE(cluster.ok()) << cluster.error();
    const std::vector<Output> outputs = RunAll(cluster);
    for (size_t i = 0; i < outputs.size(); ++i) EXPECT_TRUE(outputs[i] == reference[i]) << i;
  }
  {
    Cluster cluster({.attention_nodes = 1,
                     .expert_nodes = 3,
                     .router_flags = {"--redundant-experts", "2"}});
    ASSERT_TRUE(cluster.ok()) << cluster.error();
    // 16 + 2 physical experts per layer: two logical experts have two replicas.
    const json placement = Placement(cluster);
    int replicated = 0;
    for (const json& entry : placement["committed"]["experts"]) replicated += entry["nodes"].size() > 1;
    EXPECT_EQ(replicated, 2 * 3) << placement.dump();  // 3 MoE layers
    const std::vector<Output> outputs = RunAll(cluster);
    for (size_t i = 0; i < outputs.size(); ++i) EXPECT_TRUE(outputs[i] == reference[i]) << i;
    // Run again: the replicas of the replicated experts rotate, and nothing changes.
    const std::vector<Output> again = RunAll(cluster);
    for (size_t i = 0; i < again.size(); ++i) EXPECT_TRUE(again[i] == reference[i]) << i;
  }
}

TEST(ElasticPool, RebalanceAndJoinMidGenerationKeepLogitsBitwise) {
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 3,
                   .router_flags = {"--redundant-experts", "2"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const json& prompt = Prompts()[1];
  const int tokens = 400;
  // The reference: the same request alone, on the unchanged placement.
  const Output reference = Stream(cluster, prompt, tokens, /*ignore_eos=*/true);
  ASSERT_EQ(reference.error, "");
  ASSERT_EQ(reference.tokens.size(), static_cast<size_t>(tokens));
  const uint64_t version_before = Placement(cluster)["committed"]["version"].get<uint64_t>();

  std::atomic<bool> started{false};
  std::atomic<size_t> streamed{0};
  Output during;
  std::thread client([&] {
    during = Stream(cluster, prompt, tokens, true, [&](size_t count) {
      streamed = count;
      if (count >= 8) started = true;
    });
  });
  while (!started && during.error.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // A forced re-plan from the load so far, then a 4th node joining: both committed while the
  // stream runs.
  const HttpResult rebalance = cluster.Post("/v1/placement/rebalance", "{}", 60);
  EXPECT_EQ(rebalance.status, 200) << rebalance.body;
  std::string error;
  const int added = cluster.AddExpert(&error);
  ASSERT_GE(added, 0) << error;
  EXPECT_TRUE(WaitPlacement(cluster, 60, [](const json& p) {
    return HoldsReplicas(p, "expert-3") && p["target"].is_null();
  })) << Placement(cluster).dump();
  // Both changes landed in the middle of the generation.
  EXPECT_LT(streamed.load(), static_cast<size_t>(tokens)) << "the stream ended before the join";
  std::fprintf(stderr, "rebalance: %s; join committed after %zu of %d tokens\n",
               rebalance.body.c_str(), streamed.load(), tokens);
  client.join();
  ASSERT_EQ(during.error, "");
  EXPECT_GT(Placement(cluster)["committed"]["version"].get<uint64_t>(), version_before);
  EXPECT_TRUE(during == reference) << "tokens or logprobs changed across the placement change";
  // And the goldens on the new placement.
  EXPECT_EQ(Golden(prompt, Complete(cluster, prompt)), "");
}

TEST(ElasticPool, EightStreamsThroughRebalanceJoinAndDrain) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 3});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  std::atomic<bool> stop{false};
  std::atomic<int> completed{0};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      for (int i = c; !stop; ++i) {
        const json& prompt = Prompts()[i % Prompts().size()];
        const std::string failure = Golden(prompt, Stream(cluster, prompt, 24, false));
        if (!failure.empty()) {
          std::lock_guard<std::mutex> lock(failures_mutex);
          failures.push_back(failure);
        }
        ++completed;
      }
    });
  }
  auto wait_completed = [&](int more) {
    const int goal = completed + more;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (completed < goal && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  wait_completed(8);
  const HttpResult rebalance = cluster.Post("/v1/placement/rebalance", "{}", 60);
  EXPECT_EQ(rebalance.status, 200) << rebalance.body;
  wait_completed(4);
  std::string error;
  ASSERT_EQ(cluster.AddExpert(&error), 3) << error;
  EXPECT_TRUE(WaitPlacement(cluster, 60, [](const json& p) {
    return HoldsReplicas(p, "expert-3") && p["target"].is_null();
  })) << Placement(cluster).dump();
  wait_completed(4);
  cluster.SignalExpert(0, SIGTERM);
  EXPECT_EQ(cluster.WaitExpertExit(0, 60), 0) << cluster.ExpertLog(0);
  const json placement = Placement(cluster);
  EXPECT_FALSE(HoldsReplicas(placement, "expert-0")) << placement.dump();
  wait_completed(8);
  stop = true;
  for (std::thread& client : clients) client.join();
  EXPECT_GE(completed.load(), 24);
  for (const std::string& failure : failures) ADD_FAILURE() << failure;
  const HttpResult metrics = cluster.Get("/metrics");
  EXPECT_NE(metrics.body.find("moemesh_rebalances_total{reason=\"drain\"} 1"), std::string::npos)
      << metrics.body.substr(0, 2000);
}

TEST(ElasticPool, DrainThatWouldLoseExpertsIsRefusedAndTheNodeKeepsServing) {
  // Two nodes that can hold 8 experts per layer each: 16 experts need both.
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 2,
                   .expert_flags = {"--max-experts-per-layer", "8"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  cluster.SignalExpert(1, SIGTERM);
  EXPECT_TRUE(WaitPlacement(cluster, 30, [](const json& p) {
    const json* node = ExpertNode(p, "expert-1");
    return node != nullptr && (*node)["drain_state"] == "refused";
  })) << Placement(cluster).dump();
  EXPECT_EQ(cluster.WaitExpertExit(1, 1.0), -1) << "the node exited: " << cluster.ExpertLog(1);
  EXPECT_NE(cluster.ExpertLog(1).find("drain refused"), std::string::npos) << cluster.ExpertLog(1);
  const json placement = Placement(cluster);
  EXPECT_TRUE(HoldsReplicas(placement, "expert-1")) << placement.dump();
  for (const json& entry : placement["committed"]["experts"]) EXPECT_EQ(entry["nodes"].size(), 1u);
  // Still serving every expert: the goldens.
  for (const json& prompt : Prompts()) EXPECT_EQ(Golden(prompt, Complete(cluster, prompt)), "");
  const HttpResult metrics = cluster.Get("/metrics");
  EXPECT_NE(metrics.body.find("moemesh_drains_refused_total 1"), std::string::npos)
      << metrics.body.substr(0, 2000);
}

}  // namespace
}  // namespace moemesh::integration
