// The router's OpenAI API layer: request parsing and validation (every error case), prompt
// preparation, and the response / chunk shapes built from SequenceEvents, with the real tokenizer
// and R1 chat template of the tiny-r1 fixture.
#include "router/openai_api.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {
namespace {

using nlohmann::json;
using text::TokenId;
using Event = moemesh::v1::SequenceEvent;

const ModelInfo& Info() { return Model().info; }

// Status + error body of a request that must fail in parsing or preparation.
ApiError ErrorOf(Endpoint endpoint, const std::string& body, const ModelInfo& info = Info()) {
  auto parsed = ParseRequest(endpoint, body, info);
  if (!parsed.ok()) return ToApiError(parsed.status());
  auto prepared = PrepareRequest(*std::move(parsed), info, "chatcmpl-test");
  if (!prepared.ok()) return ToApiError(prepared.status());
  ADD_FAILURE() << "request was accepted: " << body;
  return ApiError{};
}

PreparedRequest Prepare(Endpoint endpoint, const std::string& body) {
  auto parsed = ParseRequest(endpoint, body, Info());
  EXPECT_TRUE(parsed.ok()) << parsed.status() << " for " << body;
  auto prepared = PrepareRequest(*std::move(parsed), Info(), "chatcmpl-abc");
  EXPECT_TRUE(prepared.ok()) << prepared.status() << " for " << body;
  return *std::move(prepared);
}

constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;
const char kUser[] = R"("messages":[{"role":"user","content":"What is 2+2?"}])";

TEST(OpenAiApiTest, LoadsModelInfo) {
  EXPECT_EQ(Info().served_name, "tiny-r1");
  EXPECT_EQ(Info().max_model_len, 163840);
  EXPECT_EQ(Info().vocab_size, 129280);
  EXPECT_TRUE(Info().parse_reasoning);
  ASSERT_TRUE(Info().bos_token_id.has_value());
  EXPECT_EQ(*Info().bos_token_id, 0);
  json models = ModelsJson(Info());
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny-r1");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["max_model_len"], 163840);
  EXPECT_EQ(ModelJson(Info()), models["data"][0]);
  ApiError unknown = ModelNotFoundError("gpt-4", Info());
  EXPECT_EQ(unknown.http_status, 404);
  EXPECT_EQ(unknown.type, "invalid_request_error");
  EXPECT_EQ(unknown.param, "model");
  EXPECT_EQ(unknown.code, "model_not_found");
}

TEST(OpenAiApiTest, ParsesChatParameters) {
  std::string body = R"({"model":"tiny-r1",)" + std::string(kUser) + R"(,
    "stream":true,"stream_options":{"include_usage":true},"max_tokens":5,
    "max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":40,"seed":11,"n":3,
    "stop":["\n\n","END",""],"logprobs":true,"top_logprobs":4,"return_token_ids":true,
    "tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto",
    "user":"ignored","frequency_penalty":0})";
  auto parsed = ParseRequest(kChat, body, Info());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ApiRequest& r = *parsed;
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_DOUBLE_EQ(r.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.top_p, 0.9);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_EQ(r.seed, 11u);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 4);
  EXPECT_TRUE(r.return_token_ids);
  EXPECT_TRUE(r.tools_offered);

  auto none = ParseRequest(kChat, R"({)" + std::string(kUser) +
                                      R"(,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","stop":"x","top_k":-1})",
                           Info());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->tools_offered);
  EXPECT_EQ(none->stop, std::vector<std::string>{"x"});
  EXPECT_EQ(none->top_k, 0);
  EXPECT_EQ(none->model, "tiny-r1");  // model may be omitted
}

TEST(OpenAiApiTest, PreparesChatSequences) {
  PreparedRequest p = Prepare(kChat, R"({)" + std::string(kUser) + R"(,"n":3,"seed":7,"temperature":0.7,"top_p":0.8,"top_k":5,"max_tokens":9,"logprobs":true,"top_logprobs":2,"stop_token_ids":[100]})");
  EXPECT_EQ(p.prompts[0].text, "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n");
  EXPECT_EQ(p.prompts[0].ids, Info().tokenizer->Encode(p.prompts[0].text));
  EXPECT_TRUE(p.output_options.parse_reasoning);
  EXPECT_TRUE(p.output_options.starts_in_reasoning);
  EXPECT_FALSE(p.output_options.parse_tool_calls);
  EXPECT_EQ(p.output_options.stop_token_ids, (std::vector<TokenId>{1, 100}));
  ASSERT_EQ(p.sequences.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const auto& s = p.sequences[i];
    EXPECT_EQ(s.sequence_id(), "chatcmpl-abc-" + std::to_string(i));
    EXPECT_EQ(s.max_new_tokens(), 9u);
    EXPECT_TRUE(s.sampling().has_seed());
    EXPECT_EQ(s.sampling().seed(), 7u + i);
    EXPECT_DOUBLE_EQ(s.sampling().temperature(), 0.7);
    EXPECT_DOUBLE_EQ(s.sampling().top_p(), 0.8);
    EXPECT_EQ(s.sampling().top_k(), 5);
    EXPECT_TRUE(s.logprobs());
    EXPECT_EQ(s.top_logprobs(), 2u);
    EXPECT_EQ(s.stop_token_ids_size(), 1);
    EXPECT_EQ(s.prompt_token_ids_size(), static_cast<int>(p.prompts[0].ids.size()));
  }
}

TEST(OpenAiApiTest, DefaultMaxTokensFillsTheContext) {
  PreparedRequest p = Prepare(kChat, R"({)" + std::string(kUser) + "}");
  EXPECT_EQ(p.prompts[0].max_tokens, 163840 - static_cast<int64_t>(p.prompts[0].ids.size()));
  EXPECT_FALSE(p.sequences[0].sampling().has_seed());
}

TEST(OpenAiApiTest, CompletionPromptForms) {
  PreparedRequest text = Prepare(kCompletions, R"({"prompt":"Hello world"})");
  std::vector<TokenId> expected = {0};
  for (TokenId id : Info().tokenizer->Encode("Hello world")) expected.push_back(id);
  EXPECT_EQ(text.prompts[0].ids, expected);  // BOS first, as Hugging Face encodes it
  EXPECT_FALSE(text.output_options.parse_reasoning);
  EXPECT_EQ(Prepare(kCompletions, R"({"prompt":["Hello world"]})").prompts[0].ids, expected);
  EXPECT_EQ(Prepare(kCompletions, R"({"prompt":[5,6,129279]})").prompts[0].ids,
            (std::vector<TokenId>{5, 6, 129279}));
  EXPECT_EQ(Prepare(kCompletions, R"({"prompt":[[5,6]]})").prompts[0].ids, (std::vector<TokenId>{5, 6}));
  PreparedRequest options = Prepare(kCompletions, R"({"prompt":[1,2],"logprobs":3,"return_token_ids":true,"ignore_eos":true})");
  EXPECT_TRUE(options.api.logprobs);
  EXPECT_EQ(options.api.top_logprobs, 3);
  EXPECT_TRUE(options.sequences[0].ignore_eos());
  EXPECT_TRUE(options.output_options.stop_token_ids.empty());
}

struct ErrorCase {
  Endpoint endpoint;
  std::string body;
  int status;
  std::string param;  // "" = null
  std::string code;   // "" = null
};

TEST(OpenAiApiTest, EveryErrorCaseHasStatusAndBody) {
  const std::string u = kUser;
  const std::vector<ErrorCase> cases = {
      // Malformed bodies.
      {kChat, "", 400, "", ""},
      {kChat, "{", 400, "", ""},
      {kChat, "[1,2]", 400, "", ""},
      {kChat, "null", 400, "", ""},
      {kChat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "", ""},
      {kChat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\"}]}", 400, "", ""},
      {kChat, R"({"messages":[{"role":"user","content":"\ud800"}]})", 400, "", ""},
      {kChat, R"({"messages":[{"role":"user","content":"\udc00x"}]})", 400, "", ""},
      {kChat, R"({"messages":[{"role":"user","content":"\ud800\u0041"}]})", 400, "", ""},
      {kCompletions, R"({"prompt":"\uDBFF"})", 400, "", ""},
      // Model.
      {kChat, R"({"model":"gpt-4",)" + u + "}", 404, "model", "model_not_found"},
      {kChat, R"({"model":7,)" + u + "}", 400, "model", ""},
      // Messages.
      {kChat, R"({})", 400, "messages", ""},
      {kChat, R"({"messages":[]})", 400, "messages", ""},
      {kChat, R"({"messages":"hi"})", 400, "messages", ""},
      {kChat, R"({"messages":[5]})", 400, "messages[0]", ""},
      {kChat, R"({"messages":[{"role":"wizard","content":"x"}]})", 400, "messages[0].role", ""},
      {kChat, R"({"messages":[{"content":"x"}]})", 400, "messages[0].role", ""},
      {kChat, R"({"messages":[{"role":"user"}]})", 400, "messages[0].content", ""},
      {kChat, R"({"messages":[{"role":"user","content":5}]})", 400, "messages[0].content", ""},
      {kChat, R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})", 400, "messages[0].content[0]", ""},
      {kChat, R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{}}]}]})", 400, "messages[0].tool_calls[0].function.name", ""},
      {kChat, R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"type":"x","function":{"name":"f"}}]}]})", 400, "messages[0].tool_calls[0].type", ""},
      // Sampling and lengths.
      {kChat, "{" + u + R"(,"temperature":-0.1})", 400, "temperature", ""},
      {kChat, "{" + u + R"(,"temperature":2.5})", 400, "temperature", ""},
      {kChat, "{" + u + R"(,"temperature":"hot"})", 400, "temperature", ""},
      {kChat, "{" + u + R"(,"top_p":0})", 400, "top_p", ""},
      {kChat, "{" + u + R"(,"top_p":1.5})", 400, "top_p", ""},
      {kChat, "{" + u + R"(,"top_k":-2})", 400, "top_k", ""},
      {kChat, "{" + u + R"(,"top_k":1.5})", 400, "top_k", ""},
      {kChat, "{" + u + R"(,"n":0})", 400, "n", ""},
      {kChat, "{" + u + R"(,"n":17})", 400, "n", ""},
      {kChat, "{" + u + R"(,"n":true})", 400, "n", ""},
      {kChat, "{" + u + R"(,"max_tokens":0})", 400, "max_tokens", ""},
      {kChat, "{" + u + R"(,"max_tokens":-5})", 400, "max_tokens", ""},
      {kChat, "{" + u + R"(,"max_tokens":"10"})", 400, "max_tokens", ""},
      {kChat, "{" + u + R"(,"max_completion_tokens":0})", 400, "max_completion_tokens", ""},
      {kChat, "{" + u + R"(,"max_tokens":163840})", 400, "max_tokens", ""},
      {kChat, "{" + u + R"(,"seed":"x"})", 400, "seed", ""},
      {kChat, "{" + u + R"(,"stream":"yes"})", 400, "stream", ""},
      {kChat, "{" + u + R"(,"stream":true,"stream_options":{"include_usage":1}})", 400, "stream_options.include_usage", ""},
      {kChat, "{" + u + R"(,"stream_options":3})", 400, "stream_options", ""},
      {kChat, "{" + u + R"(,"stream_options":{"include_usage":true}})", 400, "stream_options", ""},
      {kChat, "{" + u + R"(,"stream":false,"stream_options":{}})", 400, "stream_options", ""},
      {kChat, "{" + u + R"(,"seed":1e30})", 400, "seed", ""},
      {kChat, "{" + u + R"(,"seed":1.5})", 400, "seed", ""},
      {kChat, "{" + u + R"(,"presence_penalty":2.5})", 400, "presence_penalty", ""},
      {kChat, "{" + u + R"(,"frequency_penalty":-3})", 400, "frequency_penalty", ""},
      {kChat, "{" + u + R"(,"frequency_penalty":"x"})", 400, "frequency_penalty", ""},
      {kChat, "{" + u + R"(,"presence_penalty":0.5})", 400, "presence_penalty", ""},
      {kCompletions, R"({"prompt":"hi","frequency_penalty":1})", 400, "frequency_penalty", ""},
      {kChat, "{" + u + R"(,"response_format":{"type":"json_object"}})", 400, "response_format.type", ""},
      {kChat, "{" + u + R"(,"response_format":{"type":"json_schema","json_schema":{}}})", 400, "response_format.type", ""},
      {kChat, "{" + u + R"(,"response_format":"text"})", 400, "response_format", ""},
      {kChat, "{" + u + R"(,"response_format":{}})", 400, "response_format.type", ""},
      {kChat, "{" + u + R"(,"stop":5})", 400, "stop", ""},
      {kChat, "{" + u + R"(,"stop":["a",1]})", 400, "stop", ""},
      {kChat, "{" + u + R"(,"logprobs":1})", 400, "logprobs", ""},
      {kChat, "{" + u + R"(,"logprobs":true,"top_logprobs":21})", 400, "top_logprobs", ""},
      {kChat, "{" + u + R"(,"logprobs":true,"top_logprobs":-1})", 400, "top_logprobs", ""},
      {kChat, "{" + u + R"(,"top_logprobs":3})", 400, "top_logprobs", ""},
      {kChat, "{" + u + R"(,"tools":{}})", 400, "tools", ""},
      {kChat, "{" + u + R"(,"tools":[{"type":"function"}]})", 400, "tools[0].function", ""},
      {kChat, "{" + u + R"(,"tools":[{"type":"function","function":{"name":""}}]})", 400, "tools[0].function.name", ""},
      {kChat, "{" + u + R"(,"tools":[{"function":{"name":"f"}}]})", 400, "tools[0].type", ""},
      {kChat, "{" + u + R"(,"tools":[5]})", 400, "tools[0]", ""},
      {kChat, "{" + u + R"(,"tool_choice":"required"})", 400, "tool_choice", ""},
      {kChat, "{" + u + R"(,"tool_choice":{"type":"function","function":{"name":"f"}}})", 400, "tool_choice", ""},
      {kChat, "{" + u + R"(,"stop_token_ids":[129280]})", 400, "stop_token_ids", ""},
      {kChat, "{" + u + R"(,"return_token_ids":"yes"})", 400, "return_token_ids", ""},
      // Completions.
      {kCompletions, R"({})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":5})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":[]})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":""})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":["a",[1]]})", 400, "prompt[1]", ""},
      {kCompletions, R"({"prompt":[[1],[]]})", 400, "prompt[1]", ""},
      {kCompletions, R"({"prompt":[[1],[129280]]})", 400, "prompt[1]", ""},
      {kCompletions, R"({"prompt":[1,"a"]})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":[129280]})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":[-1]})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":[1.5]})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":"hi","logprobs":21})", 400, "logprobs", ""},
      {kCompletions, R"({"prompt":"hi","logprobs":true})", 400, "logprobs", ""},
      {kCompletions, R"({"prompt":"hi","echo":1})", 400, "echo", ""},
      {kCompletions, R"({"prompt":"hi","echo":true,"logprobs":2})", 400, "echo", ""},
      {kCompletions, R"({"prompt":"hi","suffix":"x"})", 400, "suffix", ""},
      {kCompletions, R"({"prompt":"hi","n":3,"best_of":2})", 400, "best_of", ""},
      {kCompletions, R"({"prompt":"hi","best_of":17})", 400, "best_of", ""},
      {kCompletions, R"({"prompt":"hi","best_of":2,"stream":true})", 400, "best_of", ""},
      {kCompletions, R"({"prompt":"hi","top_logprobs":2})", 400, "top_logprobs", ""},
      {kCompletions, R"({"prompt":"hi","messages":[]})", 400, "messages", ""},
      // Parameters this server does not implement are refused, never ignored.
      {kChat, "{" + u + R"(,"best_of":2})", 400, "best_of", ""},
      {kChat, "{" + u + R"(,"echo":true})", 400, "echo", ""},
      {kChat, "{" + u + R"(,"suffix":"x"})", 400, "suffix", ""},
      {kChat, "{" + u + R"(,"repetition_penalty":1.1})", 400, "repetition_penalty", ""},
      {kChat, "{" + u + R"(,"functions":[]})", 400, "functions", ""},
      {kChat, "{" + u + R"(,"parallel_tool_calls":"x"})", 400, "parallel_tool_calls", ""},
      {kChat, "{" + u + R"(,"logit_bias":"x"})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"129280":1}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"-1":1}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"abc":1}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"5":100.5}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"5":-101}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"logit_bias":{"5":"1"}})", 400, "logit_bias", ""},
      {kChat, "{" + u + R"(,"min_tokens":-1})", 400, "min_tokens", ""},
      {kChat, "{" + u + R"(,"min_tokens":"3"})", 400, "min_tokens", ""},
      {kChat, "{" + u + R"(,"min_tokens":5,"max_tokens":4})", 400, "min_tokens", ""},
      {kChat, "{" + u + R"(,"chat_template_kwargs":[]})", 400, "chat_template_kwargs", ""},
      {kChat, "{" + u + R"(,"chat_template_kwargs":{"messages":[]}})", 400, "chat_template_kwargs", ""},
      {kChat, "{" + u + R"(,"add_generation_prompt":"no"})", 400, "add_generation_prompt", ""},
      {kChat, "{" + u + R"(,"prompt":"x"})", 400, "prompt", ""},
      {kCompletions, R"({"prompt":[1,2,3],"max_tokens":163838})", 400, "max_tokens", ""},
      {kCompletions, R"({"model":"other","prompt":"hi"})", 404, "model", "model_not_found"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.body);
    ApiError error = ErrorOf(c.endpoint, c.body);
    EXPECT_EQ(error.http_status, c.status);
    json body = json::parse(ErrorBody(error));
    ASSERT_TRUE(body.contains("error"));
    const json& e = body["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_FALSE(e["message"].get<std::string>().empty());
    EXPECT_EQ(e["type"], std::string("invalid_request_error"));
    EXPECT_EQ(e["param"], c.param.empty() ? json(nullptr) : json(c.param));
    EXPECT_EQ(e["code"], c.code.empty() ? json(nullptr) : json(c.code));
  }
}

TEST(OpenAiApiTest, ContextErrorGivesBothLengths) {
  PreparedRequest ok = Prepare(kCompletions, R"({"prompt":[1,2,3],"max_tokens":163837})");
  EXPECT_EQ(ok.prompts[0].max_tokens, 163837);
  ApiError error = ErrorOf(kCompletions, R"({"prompt":[1,2,3],"max_tokens":163838})");
  EXPECT_NE(error.message.find("163840"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("163841"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("3 in the prompt"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("163838 in the completion"), std::string::npos) << error.message;

  ModelInfo small = Info();
  small.max_model_len = 3;
  ApiError too_long = ErrorOf(kCompletions, R"({"prompt":[1,2,3]})", small);
  EXPECT_EQ(too_long.http_status, 400);
  EXPECT_EQ(too_long.param, "prompt");
  EXPECT_NE(too_long.message.find("3 tokens"), std::string::npos) << too_long.message;
  // The prompt alone fills the context: the prompt is named, even with max_tokens given.
  ApiError prompt_full = ErrorOf(kCompletions, R"({"prompt":[1,2,3],"max_tokens":1})", small);
  EXPECT_EQ(prompt_full.param, "prompt");
  ModelInfo tiny = Info();
  tiny.max_model_len = 2;
  ApiError chat_full = ErrorOf(kChat, std::string("{") + kUser + R"(,"max_tokens":1})", tiny);
  EXPECT_EQ(chat_full.http_status, 400);
  EXPECT_EQ(chat_full.param, "messages");
  // Room for the prompt but not max_tokens: max_tokens is named.
  ModelInfo four = Info();
  four.max_model_len = 4;
  EXPECT_EQ(ErrorOf(kCompletions, R"({"prompt":[1,2,3],"max_tokens":2})", four).param, "max_tokens");
}

TEST(OpenAiApiTest, SeedRangeAndAcceptedNoOps) {
  ApiError seed = ErrorOf(kChat, std::string("{") + kUser + R"(,"seed":1e30})");
  EXPECT_NE(seed.message.find("18446744073709551615"), std::string::npos) << seed.message;
  EXPECT_NE(seed.message.find("-9223372036854775808"), std::string::npos) << seed.message;
  auto integral = ParseRequest(kChat, std::string("{") + kUser + R"(,"seed":5.0})", Info());
  ASSERT_TRUE(integral.ok()) << integral.status();
  EXPECT_EQ(integral->seed, 5u);
  // Zero penalties, a text response_format, a null stream_options and an empty stop string are
  // accepted (the empty stop string is ignored).
  auto ok = ParseRequest(kChat, std::string("{") + kUser +
                                    R"(,"presence_penalty":0,"frequency_penalty":0.0,)"
                                    R"("response_format":{"type":"text"},"stream_options":null,)"
                                    R"("stop":""})",
                         Info());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->stop.empty());
  ApiError penalty = ErrorOf(kChat, std::string("{") + kUser + R"(,"presence_penalty":1})");
  EXPECT_NE(penalty.message.find("not supported"), std::string::npos) << penalty.message;
  ApiError format = ErrorOf(kChat, std::string("{") + kUser + R"(,"response_format":{"type":"json_object"}})");
  EXPECT_NE(format.message.find("not supported"), std::string::npos) << format.message;
}

TEST(OpenAiApiTest, StatusMapping) {
  EXPECT_EQ(ToApiError(absl::UnavailableError("no healthy attention node")).http_status, 503);
  EXPECT_EQ(ToApiError(absl::UnavailableError("x")).type, "service_unavailable_error");
  EXPECT_EQ(ToApiError(absl::DeadlineExceededError("x")).http_status, 504);
  EXPECT_EQ(ToApiError(absl::InternalError("x")).http_status, 500);
  EXPECT_EQ(ApiErrorFromHttpStatus(0, "x").http_status, 503);
  EXPECT_EQ(ApiErrorFromHttpStatus(400, "x").type, "invalid_request_error");
}

// ---------------------------------------------------------------------------------------------
// Responses

Event Tokens(const std::vector<TokenId>& ids, Event::FinishReason finish = Event::NOT_FINISHED,
             bool with_logprobs = false) {
  Event event;
  for (TokenId id : ids) {
    auto* token = event.add_tokens();
    token->set_token_id(static_cast<uint32_t>(id));
    if (with_logprobs) {
      token->set_logprob(-0.25f);
      for (int k = 0; k < 3; ++k) {
        auto* top = token->add_top_logprobs();
        top->set_token_id(static_cast<uint32_t>(id + k));
        top->set_logprob(-0.25f - k);
      }
    }
  }
  event.set_finish_reason(finish);
  return event;
}

// Runs `events` (all for choice 0 unless `choices` > 1, where each choice gets the same events)
// through a builder; returns the chunks (streaming) or the response (not).
struct Fed {
  std::vector<json> chunks;
  json response;
  std::vector<ResponseBuilder::EventResult> results;
};

Fed Feed(const PreparedRequest& p, const std::vector<Event>& events) {
  Fed run;
  ResponseBuilder builder(p, Info(), "chatcmpl-abc", 1700000000);
  if (p.api.stream) {
    for (const auto& c : builder.StartChunks()) run.chunks.push_back(json::parse(c));
  }
  for (int choice = 0; choice < p.api.n; ++choice) {
    for (const Event& e : events) {
      auto result = builder.OnEvent(choice, e);
      for (const auto& c : result.chunks) run.chunks.push_back(json::parse(c));
      run.results.push_back(result);
    }
  }
  EXPECT_TRUE(builder.all_finished());
  if (p.api.stream) {
    for (const auto& c : builder.EndChunks()) run.chunks.push_back(json::parse(c));
  } else {
    run.response = builder.Response();
  }
  return run;
}

// Joins chat chunks of `choice` into {reasoning, content, tool_calls, finish, logprobs, token_ids}.
json JoinChat(const std::vector<json>& chunks, int choice) {
  json joined = {{"reasoning_content", ""}, {"content", ""}, {"tool_calls", json::array()},
                 {"finish_reason", nullptr}, {"logprobs", json::array()}, {"token_ids", json::array()}};
  for (const json& chunk : chunks) {
    for (const json& c : chunk["choices"]) {
      if (c["index"] != choice) continue;
      const json& d = c["delta"];
      if (d.contains("reasoning_content")) joined["reasoning_content"] = joined["reasoning_content"].get<std::string>() + d["reasoning_content"].get<std::string>();
      if (d.contains("content")) joined["content"] = joined["content"].get<std::string>() + d["content"].get<std::string>();
      if (d.contains("tool_calls")) {
        for (const json& call : d["tool_calls"]) joined["tool_calls"].push_back(call);
      }
      if (!c["finish_reason"].is_null()) joined["finish_reason"] = c["finish_reason"];
      if (c.contains("logprobs") && c["logprobs"].is_object()) {
        for (const json& lp : c["logprobs"]["content"]) joined["logprobs"].push_back(lp);
      }
      if (c.contains("token_ids")) {
        for (const json& id : c["token_ids"]) joined["token_ids"].push_back(id);
      }
    }
  }
  return joined;
}

std::vector<TokenId> Ids(const std::string& text) { return Info().tokenizer->Encode(text); }

std::string ChatBody(const std::string& extra) { return "{" + std::string(kUser) + extra + "}"; }

TEST(OpenAiApiTest, NonStreamingChatResponse) {
  PreparedRequest p = Prepare(kChat, ChatBody(R"(,"max_tokens":100)"));
  std::vector<TokenId> ids = Ids("Adding two and two.</think>\n\nThe answer is 4.");
  ids.push_back(1);  // EOS as the node sends it
  Fed run = Feed(p, {Tokens(ids, Event::STOP)});
  const json& r = run.response;
  EXPECT_EQ(r["id"], "chatcmpl-abc");
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["created"], 1700000000);
  EXPECT_EQ(r["model"], "tiny-r1");
  ASSERT_EQ(r["choices"].size(), 1u);
  const json& c = r["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_EQ(c["message"]["reasoning_content"], "Adding two and two.");
  EXPECT_EQ(c["message"]["content"], "\n\nThe answer is 4.");
  EXPECT_FALSE(c["message"].contains("tool_calls"));
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(r["usage"]["prompt_tokens"], p.prompts[0].ids.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], ids.size());
  EXPECT_EQ(r["usage"]["total_tokens"], p.prompts[0].ids.size() + ids.size());
}

TEST(OpenAiApiTest, StopWithoutEosTokenAndLength) {
  PreparedRequest p = Prepare(kChat, ChatBody(R"(,"max_tokens":100)"));
  // The node reports STOP without sending the EOS token itself.
  Fed stop = Feed(p, {Tokens(Ids("a</think>b")), Tokens({}, Event::STOP)});
  EXPECT_EQ(stop.response["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stop.response["choices"][0]["message"]["content"], "b");
  Fed length = Feed(p, {Tokens(Ids("a</think>b"), Event::LENGTH)});
  EXPECT_EQ(length.response["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(length.response["choices"][0]["message"]["content"], "b");
}

TEST(OpenAiApiTest, StreamingChunksJoinToTheNonStreamingFields) {
  std::vector<TokenId> ids = Ids("Let me think: 2 and 2 make 4, so 四.</think>The answer is **4** 🎉.");
  ids.push_back(1);
  for (bool one_per_event : {false, true}) {
    SCOPED_TRACE(one_per_event);
    std::vector<Event> events;
    if (one_per_event) {
      for (TokenId id : ids) events.push_back(Tokens({id}, Event::NOT_FINISHED, true));
      events.push_back(Tokens({}, Event::STOP));
    } else {
      events.push_back(Tokens(ids, Event::STOP, true));
    }
    const std::string params = R"(,"n":2,"logprobs":true,"top_logprobs":2,"return_token_ids":true)";
    Fed whole = Feed(Prepare(kChat, ChatBody(params)), events);
    Fed streamed = Feed(Prepare(kChat, ChatBody(params + R"(,"stream":true,"stream_options":{"include_usage":true})")), events);

    // Shape: a role chunk per choice first, usage only in the last chunk with empty choices.
    ASSERT_GE(streamed.chunks.size(), 4u);
    for (int i = 0; i < 2; ++i) {
      const json& first = streamed.chunks[i];
      EXPECT_EQ(first["object"], "chat.completion.chunk");
      EXPECT_EQ(first["choices"][0]["index"], i);
      EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
      EXPECT_TRUE(first["choices"][0].contains("prompt_token_ids"));
    }
    for (size_t i = 0; i + 1 < streamed.chunks.size(); ++i) {
      const json& chunk = streamed.chunks[i];
      EXPECT_EQ(chunk["id"], "chatcmpl-abc");
      EXPECT_TRUE(chunk["usage"].is_null());
      EXPECT_EQ(chunk["choices"].size(), 1u);
    }
    const json& last = streamed.chunks.back();
    EXPECT_TRUE(last["choices"].is_array() && last["choices"].empty());
    EXPECT_EQ(last["usage"], whole.response["usage"]);

    for (int choice = 0; choice < 2; ++choice) {
      json joined = JoinChat(streamed.chunks, choice);
      const json& c = whole.response["choices"][choice];
      EXPECT_EQ(joined["reasoning_content"], c["message"]["reasoning_content"]);
      EXPECT_EQ(joined["content"], c["message"]["content"]);
      EXPECT_EQ(joined["finish_reason"], c["finish_reason"]);
      EXPECT_EQ(joined["logprobs"], c["logprobs"]["content"]);
      EXPECT_EQ(joined["token_ids"], c["token_ids"]);
      EXPECT_EQ(c["token_ids"].size(), ids.size());
      EXPECT_EQ(c["prompt_token_ids"].size(), whole.response["usage"]["prompt_tokens"]);
    }
    EXPECT_EQ(whole.response["choices"][0]["message"]["content"], "The answer is **4** 🎉.");
  }
}

TEST(OpenAiApiTest, ChatLogprobsShape) {
  PreparedRequest p = Prepare(kChat, ChatBody(R"(,"logprobs":true,"top_logprobs":2)"));
  std::vector<TokenId> ids = Ids("x</think>Hi");
  Fed run = Feed(p, {Tokens(ids, Event::LENGTH, true)});
  const json& lp = run.response["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.contains("content"));
  ASSERT_EQ(lp["content"].size(), ids.size());
  const json& entry = lp["content"].back();
  EXPECT_EQ(entry["token"], "Hi");
  EXPECT_FLOAT_EQ(entry["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(entry["bytes"], json({72, 105}));
  ASSERT_EQ(entry["top_logprobs"].size(), 2u);  // capped at top_logprobs
  EXPECT_EQ(entry["top_logprobs"][0]["token"], "Hi");
  EXPECT_TRUE(entry["top_logprobs"][1].contains("bytes"));
}

TEST(OpenAiApiTest, CompletionsResponseLogprobsAndTokenIds) {
  PreparedRequest p = Prepare(kCompletions, R"({"prompt":[0,100,200],"max_tokens":24,"logprobs":2,"return_token_ids":true})");
  std::vector<TokenId> ids = Ids("Hello there");
  Fed run = Feed(p, {Tokens(ids, Event::LENGTH, true)});
  const json& r = run.response;
  EXPECT_EQ(r["object"], "text_completion");
  const json& c = r["choices"][0];
  EXPECT_EQ(c["text"], "Hello there");
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(c["prompt_token_ids"], json({0, 100, 200}));
  EXPECT_EQ(c["token_ids"], json(ids));
  const json& lp = c["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  EXPECT_EQ(lp["tokens"][0], "Hello");
  EXPECT_EQ(lp["token_logprobs"].size(), ids.size());
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], 5);
  EXPECT_EQ(r["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(r["usage"]["completion_tokens"], ids.size());

  // Streamed: text and token ids join to the same, finish in the last choice chunk.
  p = Prepare(kCompletions, R"({"prompt":[0,100,200],"max_tokens":24,"return_token_ids":true,"stream":true})");
  std::vector<Event> events;
  for (TokenId id : ids) events.push_back(Tokens({id}));
  events.push_back(Tokens({}, Event::LENGTH));
  Fed streamed = Feed(p, events);
  std::string text;
  json token_ids = json::array();
  int with_prompt_ids = 0;
  for (const json& chunk : streamed.chunks) {
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_FALSE(chunk.contains("usage"));
    text += chunk["choices"][0]["text"].get<std::string>();
    for (const json& id : chunk["choices"][0]["token_ids"]) token_ids.push_back(id);
    with_prompt_ids += chunk["choices"][0].contains("prompt_token_ids");
  }
  EXPECT_EQ(text, "Hello there");
  EXPECT_EQ(token_ids, json(ids));
  EXPECT_EQ(with_prompt_ids, 1);
  EXPECT_EQ(streamed.chunks.back()["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiApiTest, StopStringEndsTheChoiceAndAsksToCancel) {
  PreparedRequest p = Prepare(kChat, ChatBody(R"(,"stop":["answer"])"));
  Fed run = Feed(p, {Tokens(Ids("think</think>The answer is 4")), Tokens(Ids(" more"))});
  EXPECT_EQ(run.response["choices"][0]["message"]["content"], "The ");
  EXPECT_EQ(run.response["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(run.results[0].choice_finished);
  EXPECT_TRUE(run.results[0].cancel_sequence);
  // Tokens after the stop are not counted.
  EXPECT_LT(run.response["usage"]["completion_tokens"].get<int>(), static_cast<int>(Ids("think</think>The answer is 4").size() + 1));
}

TEST(OpenAiApiTest, ToolCallsInBothPaths) {
  const std::string tools = R"(,"tools":[{"type":"function","function":{"name":"get_weather"}}])";
  std::string output = "I should call it.</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  std::vector<TokenId> ids = Ids(output);
  ids.push_back(1);
  std::vector<Event> events;
  for (TokenId id : ids) events.push_back(Tokens({id}));
  Fed whole = Feed(Prepare(kChat, ChatBody(tools)), events);
  const json& c = whole.response["choices"][0];
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  EXPECT_TRUE(c["message"]["content"].is_null());
  ASSERT_EQ(c["message"]["tool_calls"].size(), 1u);
  const json& call = c["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  EXPECT_TRUE(call["id"].get<std::string>().starts_with("call_"));

  Fed streamed = Feed(Prepare(kChat, ChatBody(tools + R"(,"stream":true)")), events);
  json joined = JoinChat(streamed.chunks, 0);
  EXPECT_EQ(joined["finish_reason"], "tool_calls");
  ASSERT_EQ(joined["tool_calls"].size(), 1u);
  EXPECT_EQ(joined["tool_calls"][0]["function"], call["function"]);
  EXPECT_EQ(joined["reasoning_content"], c["message"]["reasoning_content"]);
}

TEST(OpenAiApiTest, NodeErrorsBecomeApiErrors) {
  PreparedRequest p = Prepare(kChat, ChatBody(""));
  ResponseBuilder builder(p, Info(), "chatcmpl-x", 1);
  Event error;
  error.set_finish_reason(Event::ERROR);
  error.set_error("expert node 2 is gone");
  auto result = builder.OnEvent(0, error);
  ASSERT_TRUE(result.error.has_value());
  EXPECT_EQ(result.error->http_status, 503);  // error_code 0
  EXPECT_EQ(result.error->message, "expert node 2 is gone");
  error.set_error_code(400);
  EXPECT_EQ(builder.OnEvent(0, error).error->http_status, 400);
  EXPECT_EQ(builder.OnStreamEnd(0, absl::UnavailableError("connection refused")).http_status, 503);
  EXPECT_EQ(builder.OnStreamEnd(0, absl::OkStatus()).http_status, 502);
}

TEST(OpenAiApiTest, GarbledBodiesNeverCrash) {
  std::mt19937 rng(1234);
  const std::vector<std::string> seeds = {
      ChatBody(R"(,"stream":true,"n":2,"stop":["a"],"logprobs":true,"top_logprobs":3,"tools":[{"type":"function","function":{"name":"f"}}])"),
      R"({"prompt":[1,2,3],"max_tokens":5,"logprobs":2,"return_token_ids":true})",
      R"({"prompt":"text","temperature":0,"seed":-1})",
      R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","content":"r"},{"role":"user","content":[{"type":"text","text":"x"}]}]})",
  };
  const std::string alphabet = "{}[]\":,\\0123456789.-eEtrufalsn \xff\xc3\xa9\xf0";
  int accepted = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    std::string body = seeds[rng() % seeds.size()];
    int edits = 1 + rng() % 6;
    for (int e = 0; e < edits && !body.empty(); ++e) {
      size_t at = rng() % body.size();
      switch (rng() % 4) {
        case 0: body[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: body.erase(at, 1 + rng() % 4); break;
        case 2: body.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        case 3: body.insert(at, "\\ud800"); break;
      }
    }
    if (iteration % 10 == 0) {  // pure noise now and then
      body.clear();
      for (int i = rng() % 64; i > 0; --i) body.push_back(static_cast<char>(rng()));
    }
    for (Endpoint endpoint : {kChat, kCompletions}) {
      auto parsed = ParseRequest(endpoint, body, Info());
      if (!parsed.ok()) {
        ApiError error = ToApiError(parsed.status());
        EXPECT_TRUE(error.http_status == 400 || error.http_status == 404) << body;
        EXPECT_NO_THROW(json::parse(ErrorBody(error)));
        continue;
      }
      auto prepared = PrepareRequest(*std::move(parsed), Info(), "cmpl-fuzz");
      if (!prepared.ok()) {
        EXPECT_EQ(ToApiError(prepared.status()).http_status, 400) << body;
        continue;
      }
      ++accepted;
      ResponseBuilder builder(*prepared, Info(), "cmpl-fuzz", 1);
      builder.StartChunks();
      for (int choice = 0; choice < prepared->api.n; ++choice) {
        builder.OnEvent(choice, Tokens({static_cast<TokenId>(rng() % 129280), 128799, 5, 1}, Event::STOP, true));
      }
      EXPECT_TRUE(builder.all_finished());
      EXPECT_NO_THROW(DumpJson(builder.Response()));
      builder.EndChunks();
    }
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace moemesh::router
