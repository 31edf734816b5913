// Issue 13's parameters through the whole cluster (router -> attention node -> expert node):
// logit_bias changes a greedy token and min_tokens holds off EOS where sampling happens (the
// attention node), a token's logprob is one value in token_logprobs and top_logprobs, tools
// reach the prompt with the tool-aware template, and /tokenize answers.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

const json& Prompt() { return TinyR1Goldens()["results"][0]; }

json Completion(Cluster& cluster, json body) {
  body["model"] = "tiny-r1";
  body["prompt"] = Prompt()["ids"];
  body["temperature"] = 0;
  body["return_token_ids"] = true;
  const HttpResult result = cluster.Post("/v1/completions", body.dump());
  EXPECT_EQ(result.status, 200) << result.body;
  return result.Json();
}

std::vector<int64_t> TokenIds(const json& response) {
  return response["choices"][0]["token_ids"].get<std::vector<int64_t>>();
}

TEST(Cluster, ApiParametersLogitBiasMinTokensLogprobsTools) {
  Cluster cluster({.attention_nodes = 1,
                   .expert_nodes = 1,
                   .router_flags = {"--chat-template", std::string(MOEMESH_SOURCE_DIR) +
                                                           "/deploy/templates/deepseek-r1-tools.jinja"}});
  ASSERT_TRUE(cluster.ok()) << cluster.error();

  // logit_bias moves the greedy token on the attention node.
  const int64_t greedy = TokenIds(Completion(cluster, {{"max_tokens", 1}}))[0];
  EXPECT_EQ(greedy, Prompt()["greedy"][0].get<int64_t>());
  const int64_t other = greedy == 100 ? 101 : 100;
  const json biased = Completion(cluster, {{"max_tokens", 1},
                                           {"logit_bias", {{std::to_string(other), 100}}}});
  EXPECT_EQ(TokenIds(biased)[0], other);

  // min_tokens: with EOS pushed to the top, the sequence still makes 3 tokens first.
  const std::string eos = "1";
  const json eager = Completion(cluster, {{"max_tokens", 8}, {"logit_bias", {{eos, 100}}}});
  EXPECT_EQ(eager["choices"][0]["finish_reason"], "stop");
  EXPECT_LE(TokenIds(eager).size(), 1u);
  const json held = Completion(cluster, {{"max_tokens", 8}, {"min_tokens", 3}, {"logit_bias", {{eos, 100}}}});
  EXPECT_EQ(held["choices"][0]["finish_reason"], "stop");
  const std::vector<int64_t> ids = TokenIds(held);
  ASSERT_GE(ids.size(), 3u) << held.dump();
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(ids[i], 1);
  ASSERT_EQ(held["usage"]["completion_tokens"].get<int64_t>(), static_cast<int64_t>(ids.size()));

  // logprobs: the sampled token's value in token_logprobs equals its entry in top_logprobs.
  const json logprobs = Completion(cluster, {{"max_tokens", 6}, {"logprobs", 5}})["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const json& top = logprobs["top_logprobs"][i];
    const std::string token = logprobs["tokens"][i].get<std::string>();
    ASSERT_TRUE(top.contains(token)) << top.dump();  // greedy: the top token is the sampled one
    EXPECT_EQ(top[token].dump(), logprobs["token_logprobs"][i].dump());
  }

  // Tools reach the prompt through the tool-aware template.
  const std::string user = R"("model":"tiny-r1","max_tokens":1,"messages":[{"role":"user","content":"Weather?"}])";
  const HttpResult plain = cluster.Post("/v1/chat/completions", "{" + user + "}");
  const HttpResult tools = cluster.Post(
      "/v1/chat/completions",
      "{" + user + R"(,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]})");
  ASSERT_EQ(plain.status, 200) << plain.body;
  ASSERT_EQ(tools.status, 200) << tools.body;
  EXPECT_GT(tools.Json()["usage"]["prompt_tokens"].get<int64_t>(),
            plain.Json()["usage"]["prompt_tokens"].get<int64_t>() + 20);

  // Bad values are 400s naming the parameter.
  const HttpResult bad = cluster.Post(
      "/v1/completions", R"({"prompt":"x","logit_bias":{"5":500}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.Json()["error"]["param"], "logit_bias");

  const HttpResult tokenized = cluster.Post("/tokenize", R"({"prompt":"Hello world"})");
  ASSERT_EQ(tokenized.status, 200) << tokenized.body;
  EXPECT_EQ(tokenized.Json()["tokens"], json({0, 19923, 2058}));
}

}  // namespace
}  // namespace moemesh::integration
