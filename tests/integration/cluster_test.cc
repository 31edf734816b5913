// The cluster over real processes on loopback: golden greedy tokens through the OpenAI API with
// several node counts and concurrency, streaming == non-streaming chat, error bodies, cache freed
// when a client goes away, an expert node killed mid-request and restarted, cache admission.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

const json& Prompts() { return TinyR1Goldens()["results"]; }

std::string CompletionBody(const json& prompt, int max_tokens = 24, bool stream = false) {
  json body = {{"model", "tiny-r1"},
               {"prompt", prompt["ids"]},
               {"max_tokens", max_tokens},
               {"temperature", 0},
               {"return_token_ids", true}};
  if (stream) body["stream"] = true;
  return body.dump();
}

// "" when `result` is a 200 whose token_ids match the prompt's golden continuation.
std::string CheckGolden(const json& prompt, const HttpResult& result) {
  if (result.status != 200) {
    return prompt["name"].get<std::string>() + ": HTTP " + std::to_string(result.status) + " " +
           result.error + " " + result.body;
  }
  const json body = result.Json();
  if (!body.contains("choices") || body["choices"].empty() ||
      !body["choices"][0].contains("token_ids")) {
    return prompt["name"].get<std::string>() + ": no choices[0].token_ids in " + result.body;
  }
  if (body["choices"][0]["prompt_token_ids"] != prompt["ids"]) {
    return prompt["name"].get<std::string>() + ": prompt_token_ids differ from the prompt";
  }
  return CompareGreedy(prompt, body["choices"][0]["token_ids"].get<std::vector<int64_t>>());
}

void ExpectAllGolden(Cluster& cluster) {
  for (const json& prompt : Prompts()) {
    const HttpResult result = cluster.Post("/v1/completions", CompletionBody(prompt));
    EXPECT_EQ(CheckGolden(prompt, result), "");
  }
}

// Asserts an OpenAI error body: {"error":{"message","type","param","code"}}.
void ExpectErrorBody(const HttpResult& result, int status, const std::string& param = "") {
  EXPECT_EQ(result.status, status) << result.body;
  const json body = result.Json();
  ASSERT_TRUE(body.is_object() && body.contains("error")) << result.body;
  const json& error = body["error"];
  ASSERT_TRUE(error.is_object()) << result.body;
  for (const char* key : {"message", "type", "param", "code"}) {
    EXPECT_TRUE(error.contains(key)) << key << " missing in " << result.body;
  }
  EXPECT_TRUE(error["message"].is_string() && !error["message"].get<std::string>().empty())
      << result.body;
  EXPECT_TRUE(error["type"].is_string()) << result.body;
  if (!param.empty()) {
    EXPECT_EQ(error["param"], param) << result.body;
  }
}

// Runs `requests` at once from as many client threads; returns one failure message per bad one.
std::vector<std::string> RunConcurrentGolden(Cluster& cluster, const std::vector<int>& prompts) {
  std::vector<std::string> failures(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      const json& prompt = Prompts()[prompts[i]];
      failures[i] = CheckGolden(prompt, cluster.Post("/v1/completions", CompletionBody(prompt)));
    });
  }
  for (std::thread& client : clients) client.join();
  std::vector<std::string> bad;
  for (const std::string& failure : failures) {
    if (!failure.empty()) bad.push_back(failure);
  }
  return bad;
}

TEST(Cluster, GoldenGreedyOneAttentionOneExpert) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ExpectAllGolden(cluster);
}

TEST(Cluster, GoldenGreedyTwoAttentionThreeExperts) {
  Cluster cluster({.attention_nodes = 2, .expert_nodes = 3});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  ExpectAllGolden(cluster);
  // Run again so that both attention nodes have served (placement picks by free cache).
  ExpectAllGolden(cluster);
}

// Sixteen requests in flight, with the expert nodes reached the way `attention_flags` say: the
// default (this host's nodes through shared-memory mailboxes) or the gRPC stream (what nodes on
// other hosts get). `shared_memory` says which the attention node's metrics must show.
void ExpectSixteenInFlightGolden(std::vector<std::string> attention_flags, bool shared_memory) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 2, .attention_flags = attention_flags});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  std::vector<int> prompts;
  for (int i = 0; i < 16; ++i) prompts.push_back(i % static_cast<int>(Prompts().size()));
  for (const std::string& failure : RunConcurrentGolden(cluster, prompts)) ADD_FAILURE() << failure;
  const std::string metrics =
      Cluster::GetFrom(cluster.AttentionMetricsAddress(0), "/metrics").body;
  const double through_memory = MetricIn(metrics, "moemesh_dispatch_shared_memory_total ");
  if (shared_memory) {
    EXPECT_GT(through_memory, 0) << "no dispatch went through shared memory";
  } else {
    EXPECT_EQ(through_memory, 0) << "dispatches went through shared memory";
  }
}

TEST(Cluster, GoldenGreedySixteenInFlight) { ExpectSixteenInFlightGolden({}, true); }

TEST(Cluster, GoldenGreedySixteenInFlightOverTheGrpcStream) {
  ExpectSixteenInFlightGolden({"--shared-memory-dispatch=false"}, false);
}

TEST(Cluster, StreamingChatEqualsNonStreaming) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  json request = {{"model", "tiny-r1"},
                  {"messages",
                   {{{"role", "system"}, {"content", "You are a terse assistant."}},
                    {{"role", "user"}, {"content", "Hello! What is 2+2?"}},
                    {{"role", "assistant"}, {"content", "4."}},
                    {{"role", "user"}, {"content", "And 3+3? 答えてください。"}}}},
                  {"temperature", 0},
                  {"max_tokens", 16}};
  const HttpResult plain = cluster.Post("/v1/chat/completions", request.dump());
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json response = plain.Json();
  const json& message = response["choices"][0]["message"];
  auto text = [](const json& value) { return value.is_string() ? value.get<std::string>() : ""; };
  const std::string reasoning = message.contains("reasoning_content")
                                    ? text(message["reasoning_content"]) : "";
  const std::string content = text(message["content"]);
  EXPECT_FALSE(reasoning.empty() && content.empty()) << plain.body;

  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  std::string streamed_reasoning, streamed_content, finish_reason;
  json usage;
  bool done = false;
  int usage_chunks = 0;
  const HttpResult streamed =
      cluster.PostStream("/v1/chat/completions", request.dump(), [&](const std::string& data) {
        if (data == "[DONE]") {
          done = true;
          return true;
        }
        const json chunk = json::parse(data, nullptr, false);
        if (chunk.is_discarded()) {
          ADD_FAILURE() << "chunk is not JSON: " << data;
          return true;
        }
        if (chunk.contains("usage") && chunk["usage"].is_object()) {
          EXPECT_TRUE(chunk["choices"].empty()) << "usage outside the final chunk: " << data;
          usage = chunk["usage"];
          ++usage_chunks;
        }
        for (const json& choice : chunk["choices"]) {
          const json& delta = choice["delta"];
          if (delta.contains("reasoning_content")) streamed_reasoning += text(delta["reasoning_content"]);
          if (delta.contains("content")) streamed_content += text(delta["content"]);
          if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
            finish_reason = choice["finish_reason"];
          }
        }
        return true;
      });
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  EXPECT_TRUE(done) << streamed.body;
  EXPECT_EQ(usage_chunks, 1) << streamed.body;
  EXPECT_EQ(streamed_reasoning, reasoning);
  EXPECT_EQ(streamed_content, content);
  EXPECT_EQ(usage, response["usage"]);
  EXPECT_EQ(finish_reason, response["choices"][0]["finish_reason"]);
  EXPECT_EQ(response["usage"]["completion_tokens"], 16);
}

TEST(Cluster, ErrorBodies) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const json& prompt = Prompts()[0];
  auto with = [&](const std::string& key, const json& value) {
    json body = json::parse(CompletionBody(prompt));
    body[key] = value;
    return body.dump();
  };
  {
    SCOPED_TRACE("malformed JSON");
    ExpectErrorBody(cluster.Post("/v1/completions", R"({"model": "tiny-r1", "prompt": )"), 400);
  }
  {
    SCOPED_TRACE("invalid UTF-8");
    ExpectErrorBody(cluster.Post("/v1/completions",
                                 "{\"model\":\"tiny-r1\",\"prompt\":\"abc\xff\xfe\",\"max_tokens\":4}"),
                    400);
  }
  {
    SCOPED_TRACE("lone surrogate");
    ExpectErrorBody(
        cluster.Post("/v1/chat/completions",
                     R"({"model":"tiny-r1","messages":[{"role":"user","content":"a\ud800b"}]})"),
        400);
  }
  {
    SCOPED_TRACE("unknown model");
    ExpectErrorBody(cluster.Post("/v1/completions", with("model", "gpt-nonexistent")), 404);
  }
  {
    SCOPED_TRACE("bad temperature");
    ExpectErrorBody(cluster.Post("/v1/completions", with("temperature", -1)), 400, "temperature");
  }
  {
    SCOPED_TRACE("bad top_p");
    ExpectErrorBody(cluster.Post("/v1/completions", with("top_p", 1.5)), 400, "top_p");
  }
  {
    SCOPED_TRACE("bad n");
    ExpectErrorBody(cluster.Post("/v1/completions", with("n", 0)), 400, "n");
  }
  {
    SCOPED_TRACE("bad max_tokens");
    ExpectErrorBody(cluster.Post("/v1/completions", with("max_tokens", -3)), 400, "max_tokens");
  }
  {
    SCOPED_TRACE("over the context");
    const HttpResult result = cluster.Post("/v1/completions", with("max_tokens", 200000));
    ExpectErrorBody(result, 400);
    const std::string message = result.Json()["error"]["message"].get<std::string>();
    EXPECT_NE(message.find("200000"), std::string::npos) << message;
    EXPECT_NE(message.find(std::to_string(prompt["ids"].size())), std::string::npos) << message;
  }
  {
    // Issue 12's crash: `messages` (or a message's content) nesting 60,000 '[' killed the router.
    SCOPED_TRACE("60,000 nested arrays");
    const std::string open(60000, '['), close(60000, ']');
    ExpectErrorBody(cluster.Post("/v1/chat/completions",
                                 R"({"model":"tiny-r1","messages":)" + open + close + "}"),
                    400);
    ExpectErrorBody(
        cluster.Post("/v1/chat/completions",
                     R"({"model":"tiny-r1","messages":[{"role":"user","content":)" + open + close +
                         "}]}"),
        400);
  }
  // The server is still fine after all that.
  EXPECT_EQ(CheckGolden(prompt, cluster.Post("/v1/completions", CompletionBody(prompt))), "");
  EXPECT_EQ(cluster.Get("/health").status, 200);
}

TEST(Cluster, NoHealthyExpertHolderIs503) {
  // Nobody can take the dead node's experts: the request waits the recovery timeout, then 503.
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 1,
                   .router_flags = {"--expert-recovery-timeout", "2"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  cluster.KillExpert(0);
  // The router notices after its heartbeat timeout (3 s).
  const auto start = Clock::now();
  while (cluster.Get("/ready").status == 200 && SecondsSince(start) < 15) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_NE(cluster.Get("/ready").status, 200) << "the router did not notice within 15 s";
  const auto request_start = Clock::now();
  const HttpResult result = cluster.Post("/v1/completions", CompletionBody(Prompts()[0]), 30);
  ExpectErrorBody(result, 503);
  EXPECT_LT(SecondsSince(request_start), 15);
}

TEST(Cluster, ClientClosingMidStreamFreesTheCache) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  const int64_t before = cluster.CacheUsedTokens(0);
  ASSERT_GE(before, 0);
  int events = 0;
  int64_t during = -1;
  const HttpResult result = cluster.PostStream(
      "/v1/completions", CompletionBody(Prompts()[2], /*max_tokens=*/4000, /*stream=*/true),
      [&](const std::string& data) {
        if (data.find("\"choices\"") == std::string::npos) return true;
        if (++events == 2) during = cluster.CacheUsedTokens(0);
        return events < 3;  // close the connection after 3 chunks
      });
  EXPECT_EQ(events, 3) << result.status << " " << result.body;
  EXPECT_GT(during, before);
  const auto start = Clock::now();
  int64_t after = cluster.CacheUsedTokens(0);
  while (after != before && SecondsSince(start) < 10) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = cluster.CacheUsedTokens(0);
  }
  EXPECT_EQ(after, before) << "cache still in use " << SecondsSince(start) << " s after closing";
  EXPECT_LT(SecondsSince(start), 5);
  // And the node keeps serving.
  EXPECT_EQ(CheckGolden(Prompts()[0], cluster.Post("/v1/completions", CompletionBody(Prompts()[0]))),
            "");
}

// Kills expert node `victim` (SIGKILL) while a stream and golden requests are in flight: the
// router re-places its experts on the survivors, the stream and every golden request complete
// right (the affected steps wait), nothing hangs. Then the node comes back with the same name
// (a new member) and the goldens are answered again.
void KillExpertMidRequestThenRestart(Cluster& cluster, int victim, bool same_port) {
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::mutex mutex;
  std::vector<std::string> wrong;
  double slowest = 0;
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&, c] {
      for (int i = c; !stop.load(); ++i) {
        const json& prompt = Prompts()[i % 5];  // the short prompts
        const auto start = Clock::now();
        const HttpResult result = cluster.Post("/v1/completions", CompletionBody(prompt), 60);
        const double seconds = SecondsSince(start);
        std::lock_guard<std::mutex> lock(mutex);
        slowest = std::max(slowest, seconds);
        if (result.status == 200) {
          ++answered;
          if (std::string bad = CheckGolden(prompt, result); !bad.empty()) wrong.push_back(bad);
        } else {
          ++failed;
          if (result.status == 0) wrong.push_back("no HTTP answer: " + result.error);
        }
      }
    });
  }

  // A long streaming request; the node dies once it has produced some tokens.
  int events = 0;
  std::string error_event;
  bool done = false;
  const HttpResult streamed = cluster.PostStream(
      "/v1/completions", CompletionBody(Prompts()[0], /*max_tokens=*/60, /*stream=*/true),
      [&](const std::string& data) {
        if (data == "[DONE]") done = true;
        if (data.find("\"error\"") != std::string::npos) error_event = data;
        if (++events == 5) {
          cluster.KillExpert(victim);
        }
        return true;
      },
      /*timeout_seconds=*/60);
  EXPECT_GE(events, 5) << streamed.body;
  EXPECT_TRUE(done && error_event.empty() && streamed.status == 200)
      << "the stream did not complete after its expert node died: " << error_event << " "
      << streamed.body.substr(0, 2000);

  // Requests while the node is down wait for the re-placement and then succeed.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  stop = true;
  for (std::thread& client : clients) client.join();
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " bad, first: " << wrong.front();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 0);
  std::printf("[ expert failure ] slowest golden request around the kill: %.2f s\n", slowest);

  // Back with the same name: the same experts, and golden answers again.
  std::string why;
  ASSERT_TRUE(cluster.RestartExpert(victim, &why, same_port)) << why;
  ASSERT_TRUE(cluster.WaitReady(60, &why)) << why;
  ExpectAllGolden(cluster);
  for (int i = 0; i < cluster.options().attention_nodes; ++i) {
    EXPECT_EQ(cluster.CacheUsedTokens(i), 0) << "attention node " << i;
  }
}

TEST(Cluster, ExpertKilledMidRequestThenRestarted) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  KillExpertMidRequestThenRestart(cluster, /*victim=*/1, /*same_port=*/false);
}

TEST(Cluster, ExpertKilledMidRequestThenRestartedOnItsPort) {
  Cluster cluster({.attention_nodes = 2, .expert_nodes = 3});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  KillExpertMidRequestThenRestart(cluster, /*victim=*/0, /*same_port=*/true);
}

TEST(Cluster, AdmissionWaitsForCacheNeverTruncates) {
  // Two 64-position blocks: each request below needs one (prompt <= 32 + 24 new tokens), so at
  // most two run at once and the others wait for a block.
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1, .cache_tokens = 128});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  std::vector<int> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(i % 5);  // not the 663-token prompt
  std::atomic<bool> finished{false};
  int64_t most_waiting = 0, most_used = 0;
  std::thread observer([&] {
    while (!finished.load()) {
      const Cluster::NodeStatus status = cluster.AttentionStatus(0);
      most_waiting = std::max(most_waiting, status.waiting);
      most_used = std::max(most_used, status.used);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (const std::string& failure : RunConcurrentGolden(cluster, prompts)) ADD_FAILURE() << failure;
  finished = true;
  observer.join();
  EXPECT_LE(most_used, 128);
  EXPECT_GT(most_waiting, 0) << "no request ever waited for cache";

  // More than the whole cache: a clear error, not a wait forever.
  const auto start = Clock::now();
  const HttpResult too_long = cluster.Post("/v1/completions", CompletionBody(Prompts()[5]), 60);
  EXPECT_GE(too_long.status, 400) << too_long.error;
  EXPECT_LT(SecondsSince(start), 15);
  ExpectErrorBody(too_long, too_long.status);
  EXPECT_EQ(cluster.CacheUsedTokens(0), 0);
}

}  // namespace
}  // namespace moemesh::integration
