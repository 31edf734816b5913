// The API parameters and endpoints of issue 13: tools in the prompt through the chat template
// (and a parsed tool call round-tripping through the history), logit_bias / min_tokens reaching
// the sequences, parallel_tool_calls, echo, batched prompts, best_of, system_fingerprint, and
// /tokenize, /detokenize, /version.
#include <string>
#include <vector>

#include "core/text/tool_call_parser.h"
#include "gtest/gtest.h"
#include "router/openai_api.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {
namespace {

using nlohmann::json;
using text::TokenId;
using Event = moemesh::v1::SequenceEvent;
constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;

const ModelInfo& Info() { return Model().info; }

// The fixture with moemesh's tool-aware R1 template instead of its own.
const ModelInfo& ToolInfo() {
  static const LoadedModel* model = [] {
    auto loaded = LoadModel(MOEMESH_SHARED_DIR "/fixtures/tiny-r1", "", 0,
                            MOEMESH_SOURCE_DIR "/deploy/templates/deepseek-r1-tools.jinja");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return model->info;
}

absl::StatusOr<PreparedRequest> TryPrepare(Endpoint endpoint, const std::string& body,
                                           const ModelInfo& info) {
  auto parsed = ParseRequest(endpoint, body, info);
  if (!parsed.ok()) return parsed.status();
  return PrepareRequest(*std::move(parsed), info, "chatcmpl-abc");
}

PreparedRequest Prepare(Endpoint endpoint, const std::string& body, const ModelInfo& info = Info()) {
  auto prepared = TryPrepare(endpoint, body, info);
  EXPECT_TRUE(prepared.ok()) << prepared.status() << " for " << body;
  return prepared.ok() ? *std::move(prepared) : PreparedRequest{};
}

Event Tokens(const std::vector<TokenId>& ids, Event::FinishReason finish = Event::NOT_FINISHED,
             float logprob = 0) {
  Event event;
  for (TokenId id : ids) {
    auto* token = event.add_tokens();
    token->set_token_id(static_cast<uint32_t>(id));
    token->set_logprob(logprob);
  }
  event.set_finish_reason(finish);
  return event;
}

std::vector<TokenId> Ids(const std::string& text) { return Info().tokenizer->Encode(text); }

const char kTools[] =
    R"([{"type":"function","function":{"name":"get_weather","description":"Weather of a city",)"
    R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])";

TEST(OpenAiFeaturesTest, ToolsReachThePromptWithTheToolTemplate) {
  const std::string user = R"("messages":[{"role":"user","content":"Weather in Paris?"}])";
  PreparedRequest with = Prepare(kChat, "{" + user + R"(,"tools":)" + kTools + "}", ToolInfo());
  PreparedRequest without = Prepare(kChat, "{" + user + "}", ToolInfo());
  EXPECT_NE(with.prompts[0].text.find("### get_weather\nDescription: Weather of a city"),
            std::string::npos)
      << with.prompts[0].text;
  EXPECT_EQ(without.prompts[0].text.find("get_weather"), std::string::npos);
  EXPECT_GT(with.prompts[0].ids.size(), without.prompts[0].ids.size());
  EXPECT_TRUE(with.prompts[0].text.ends_with("<｜Assistant｜><think>\n"));
  EXPECT_TRUE(with.output_options.starts_in_reasoning);
  // tool_choice none: the tools stay in the prompt (as in vLLM), calls are not parsed.
  PreparedRequest none =
      Prepare(kChat, "{" + user + R"(,"tool_choice":"none","tools":)" + kTools + "}", ToolInfo());
  EXPECT_FALSE(none.output_options.parse_tool_calls);
}

TEST(OpenAiFeaturesTest, ParsedToolCallRoundTripsThroughTheHistory) {
  const std::string block =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  for (const ModelInfo* info : {&ToolInfo(), &Info()}) {
    const std::string body = std::string(R"({"messages":[{"role":"user","content":"Weather?"}],)") +
                             R"("tools":)" + kTools + "}";
    PreparedRequest first = Prepare(kChat, body, *info);
    ResponseBuilder builder(first, *info, "chatcmpl-abc", 1);
    std::vector<TokenId> ids = Ids("Let me check.</think>" + block);
    ids.push_back(1);
    builder.OnEvent(0, Tokens(ids, Event::STOP));
    const json response = builder.Response();
    const json& message = response["choices"][0]["message"];
    ASSERT_EQ(message["tool_calls"].size(), 1u) << response.dump();
    // The client sends the turn back (content "" as many clients do) with the tool's result.
    json history = json::array({{{"role", "user"}, {"content", "Weather?"}},
                                {{"role", "assistant"}, {"content", ""},
                                 {"tool_calls", message["tool_calls"]}},
                                {{"role", "tool"}, {"content", "18C"}}});
    PreparedRequest second = Prepare(
        kChat, json({{"messages", history}, {"tools", json::parse(kTools)}}).dump(), *info);
    const std::string& prompt = second.prompts[0].text;
    const size_t at = prompt.find("<｜tool▁calls▁begin｜>", prompt.find("<｜User｜>Weather?"));
    ASSERT_NE(at, std::string::npos) << prompt;
    // (The official R1 template leaves a single call's block unclosed: parse up to the outputs.)
    const size_t end = prompt.find("<｜tool▁outputs▁begin｜>", at);
    const text::ToolCallSplit parsed = text::ParseToolCalls(prompt.substr(at, end - at), "call_");
    ASSERT_EQ(parsed.tool_calls.size(), 1u) << prompt;
    EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(parsed.tool_calls[0].arguments),
              json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()));
    EXPECT_NE(prompt.find("<｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>"), std::string::npos);
  }
}

TEST(OpenAiFeaturesTest, TextPartsJoinAndChatTemplateKwargsReachTheTemplate) {
  PreparedRequest p = Prepare(
      kChat, R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],)"
             R"("add_generation_prompt":false})");
  EXPECT_EQ(p.prompts[0].text, "<｜begin▁of▁sentence｜><｜User｜>ab");
  EXPECT_FALSE(p.output_options.starts_in_reasoning);
}

TEST(OpenAiFeaturesTest, LogitBiasAndMinTokensReachTheSequences) {
  PreparedRequest p = Prepare(
      kChat, R"({"messages":[{"role":"user","content":"hi"}],"logit_bias":{"5":-100,"100":2.5},)"
             R"("min_tokens":3,"n":2})");
  ASSERT_EQ(p.sequences.size(), 2u);
  for (const auto& sequence : p.sequences) {
    const auto& sampling = sequence.sampling();
    ASSERT_EQ(sampling.logit_bias_size(), 2);
    EXPECT_EQ(sampling.logit_bias(0).token_id(), 5u);
    EXPECT_FLOAT_EQ(sampling.logit_bias(0).bias(), -100.0f);
    EXPECT_EQ(sampling.logit_bias(1).token_id(), 100u);
    EXPECT_FLOAT_EQ(sampling.logit_bias(1).bias(), 2.5f);
    EXPECT_EQ(sampling.min_tokens(), 3u);
  }
}

TEST(OpenAiFeaturesTest, ParallelToolCallsFalseKeepsOneCall) {
  const std::string two =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```"
      "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n{}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  for (const char* parallel : {"true", "false"}) {
    PreparedRequest p = Prepare(
        kChat, std::string(R"({"messages":[{"role":"user","content":"x"}],"tools":)") + kTools +
                   R"(,"parallel_tool_calls":)" + parallel + "}");
    ResponseBuilder builder(p, Info(), "chatcmpl-abc", 1);
    std::vector<TokenId> ids = Ids("</think>" + two);
    ids.push_back(1);
    builder.OnEvent(0, Tokens(ids, Event::STOP));
    const json calls = builder.Response()["choices"][0]["message"]["tool_calls"];
    ASSERT_EQ(calls.size(), std::string(parallel) == "true" ? 2u : 1u) << calls.dump();
    EXPECT_EQ(calls[0]["function"]["name"], "a");
  }
}

TEST(OpenAiFeaturesTest, BatchedPromptsAndEcho) {
  PreparedRequest p =
      Prepare(kCompletions, R"({"prompt":["Hello","Hi there"],"n":2,"echo":true,"max_tokens":3})");
  ASSERT_EQ(p.prompts.size(), 2u);
  ASSERT_EQ(p.sequences.size(), 4u);
  EXPECT_EQ(p.sequences[2].prompt_token_ids_size(), static_cast<int>(p.prompts[1].ids.size()));
  ResponseBuilder builder(p, Info(), "cmpl-abc", 1);
  for (int choice = 0; choice < 4; ++choice) {
    builder.OnEvent(choice, Tokens(Ids(" ok"), Event::STOP));
  }
  const json response = builder.Response();
  ASSERT_EQ(response["choices"].size(), 4u);
  EXPECT_EQ(response["choices"][0]["text"], "Hello ok");
  EXPECT_EQ(response["choices"][2]["text"], "Hi there ok");
  EXPECT_EQ(response["choices"][3]["index"], 3);
  EXPECT_EQ(response["usage"]["prompt_tokens"], p.prompts[0].ids.size() + p.prompts[1].ids.size());

  // Streaming: the prompt text is each choice's first chunk.
  PreparedRequest s = Prepare(kCompletions, R"({"prompt":"Hello","echo":true,"stream":true})");
  ResponseBuilder streaming(s, Info(), "cmpl-abc", 1);
  std::string text;
  for (const std::string& chunk : streaming.StartChunks()) {
    text += json::parse(chunk)["choices"][0]["text"].get<std::string>();
  }
  for (const std::string& chunk : streaming.OnEvent(0, Tokens(Ids(" ok"), Event::STOP)).chunks) {
    text += json::parse(chunk)["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "Hello ok");
  // Token-id prompts echo their decoded text.
  PreparedRequest ids = Prepare(kCompletions, R"({"prompt":[[19923,2058]],"echo":true})");
  EXPECT_EQ(ids.prompts[0].text, "Hello world");
}

TEST(OpenAiFeaturesTest, BestOfReturnsTheNBestByCumulativeLogprob) {
  PreparedRequest p = Prepare(kCompletions, R"({"prompt":"Hello","n":1,"best_of":3,"max_tokens":2})");
  ASSERT_EQ(p.sequences.size(), 3u);
  EXPECT_TRUE(p.sequences[0].logprobs());  // needed to rank them
  ResponseBuilder builder(p, Info(), "cmpl-abc", 1);
  const float logprobs[] = {-3.0f, -0.5f, -2.0f};
  for (int choice = 0; choice < 3; ++choice) {
    builder.OnEvent(choice, Tokens(Ids(choice == 1 ? " best" : " other"), Event::STOP, logprobs[choice]));
  }
  const json response = builder.Response();
  ASSERT_EQ(response["choices"].size(), 1u);
  EXPECT_EQ(response["choices"][0]["text"], " best");
  EXPECT_EQ(response["choices"][0]["index"], 0);
  EXPECT_TRUE(response["choices"][0]["logprobs"].is_null());  // not asked for
}

TEST(OpenAiFeaturesTest, SystemFingerprintInResponsesAndChunks) {
  EXPECT_TRUE(Info().system_fingerprint.starts_with("fp_"));
  EXPECT_NE(Info().system_fingerprint, ToolInfo().system_fingerprint);  // the template differs
  PreparedRequest p = Prepare(kChat, R"({"messages":[{"role":"user","content":"x"}],"stream":true})");
  ResponseBuilder builder(p, Info(), "chatcmpl-abc", 1);
  for (const std::string& chunk : builder.StartChunks()) {
    EXPECT_EQ(json::parse(chunk)["system_fingerprint"], Info().system_fingerprint);
  }
  PreparedRequest q = Prepare(kChat, R"({"messages":[{"role":"user","content":"x"}]})");
  ResponseBuilder whole(q, Info(), "chatcmpl-abc", 1);
  whole.OnEvent(0, Tokens({5}, Event::STOP));
  EXPECT_EQ(whole.Response()["system_fingerprint"], Info().system_fingerprint);
}

TEST(OpenAiFeaturesTest, TemplateErrorsAre400s) {
  // The official R1 template raises on content given as an object: a 400, not a 500.
  auto bad = TryPrepare(kChat, R"({"messages":[{"role":"assistant","content":null,)"
                               R"("tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]}]})",
                        Info());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ToApiError(bad.status()).http_status, 400);
  EXPECT_NE(bad.status().message().find("TypeError"), std::string::npos) << bad.status();
  // The tool template writes object arguments as JSON.
  auto good = TryPrepare(kChat, R"({"messages":[{"role":"assistant","content":null,)"
                                R"("tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]}]})",
                         ToolInfo());
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_NE(good->prompts[0].text.find("{\"a\": 1}"), std::string::npos);
}

TEST(OpenAiFeaturesTest, TokenizeShapes) {
  JsonReply prompt = TokenizeEndpoint(R"({"prompt":"Hello world"})", Info());
  ASSERT_EQ(prompt.http_status, 200) << prompt.body.dump();
  EXPECT_EQ(prompt.body["tokens"], json({0, 19923, 2058}));  // BOS first (add_special_tokens)
  EXPECT_EQ(prompt.body["count"], 3);
  EXPECT_EQ(prompt.body["max_model_len"], 163840);
  EXPECT_TRUE(prompt.body["token_strs"].is_null());
  JsonReply bare =
      TokenizeEndpoint(R"({"prompt":"Hello world","add_special_tokens":false,"return_token_strs":true})", Info());
  EXPECT_EQ(bare.body["tokens"], json({19923, 2058}));
  EXPECT_EQ(bare.body["token_strs"], json({"Hello", "Ġworld"}));
  JsonReply chat = TokenizeEndpoint(R"({"messages":[{"role":"user","content":"Hi"}]})", Info());
  ASSERT_EQ(chat.http_status, 200) << chat.body.dump();
  EXPECT_EQ(chat.body["tokens"].get<std::vector<TokenId>>(),
            Info().tokenizer->Encode("<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n"));
  EXPECT_EQ(TokenizeEndpoint(R"({"prompt":5})", Info()).http_status, 400);
  EXPECT_EQ(TokenizeEndpoint(R"({"prompt":"x","bogus":1})", Info()).http_status, 400);
  EXPECT_EQ(TokenizeEndpoint(R"({"prompt":"x","model":"other"})", Info()).http_status, 404);
  EXPECT_EQ(TokenizeEndpoint("not json", Info()).body["error"]["type"], "invalid_request_error");
}

TEST(OpenAiFeaturesTest, DetokenizeAndVersionShapes) {
  JsonReply text = DetokenizeEndpoint(R"({"tokens":[19923,2058]})", Info());
  ASSERT_EQ(text.http_status, 200);
  EXPECT_EQ(text.body, json({{"prompt", "Hello world"}}));
  JsonReply bad = DetokenizeEndpoint(R"({"tokens":[129280]})", Info());
  EXPECT_EQ(bad.http_status, 400);
  EXPECT_EQ(bad.body["error"]["param"], "tokens");
  EXPECT_EQ(DetokenizeEndpoint(R"({"tokens":"x"})", Info()).http_status, 400);
  JsonReply version = VersionEndpoint();
  EXPECT_EQ(version.http_status, 200);
  EXPECT_EQ(version.body["version"], std::string(ServerVersion()));
  EXPECT_FALSE(version.body["version"].get<std::string>().empty());
}

}  // namespace
}  // namespace moemesh::router
