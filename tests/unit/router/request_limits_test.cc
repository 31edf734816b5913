// Request limits (router/request_limits.h): nesting depth enforced during the parse, counts of
// messages, content parts, stop strings, tools and logit_bias entries; each refusal is a 400
// naming the limit. Through ParseRequest, which applies them to every body.
#include "router/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "router/openai_api.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {
namespace {

using nlohmann::json;

std::string Nested(int depth) {
  return absl::StrCat(R"({"prompt":)", std::string(depth - 1, '['), std::string(depth - 1, ']'),
                      "}");
}

ApiError Refusal(const std::string& body, Endpoint endpoint = Endpoint::kChatCompletions) {
  absl::StatusOr<ApiRequest> parsed = ParseRequest(endpoint, body, Model().info);
  EXPECT_FALSE(parsed.ok()) << body.substr(0, 200);
  return parsed.ok() ? ApiError{} : ToApiError(parsed.status());
}

TEST(RequestLimitsTest, DepthIsCheckedWhileParsing) {
  RequestLimits limits;
  limits.max_json_depth = 64;
  EXPECT_TRUE(ParseJsonWithLimits(Nested(64), limits).ok());  // the object is level 1
  absl::StatusOr<json> deep = ParseJsonWithLimits(Nested(65), limits);
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(ToApiError(deep.status()).code, "json_too_deep");
  EXPECT_NE(deep.status().message().find("64"), std::string::npos);
  // 60,000 levels: refused at level 65, nothing recurses.
  ApiError error = Refusal(absl::StrCat(R"({"messages":)", std::string(60000, '['),
                                        std::string(60000, ']'), "}"));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.code, "json_too_deep");
  EXPECT_EQ(Refusal(std::string(60000, '[')).code, "json_too_deep");  // unterminated too
  EXPECT_EQ(ToApiError(ParseJsonWithLimits("{bad", limits).status()).http_status, 400);
}

TEST(RequestLimitsTest, CountsAreLimitedAndNamed) {
  RequestLimits limits;
  json messages = json::array();
  for (size_t i = 0; i <= limits.max_messages; ++i) {
    messages.push_back({{"role", "user"}, {"content", "x"}});
  }
  ApiError error = Refusal(json{{"messages", messages}}.dump());
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.param, "messages");
  EXPECT_EQ(error.code, "limit_exceeded");
  EXPECT_NE(error.message.find(absl::StrCat(limits.max_messages)), std::string::npos);

  json parts = json::array();
  for (size_t i = 0; i <= limits.max_content_parts; ++i) parts.push_back({{"type", "text"}, {"text", "a"}});
  error = Refusal(json{{"messages", {{{"role", "user"}, {"content", parts}}}}}.dump());
  EXPECT_EQ(error.param, "messages[0].content");
  EXPECT_EQ(error.code, "limit_exceeded");

  json stops = json::array();
  for (size_t i = 0; i <= limits.max_stop; ++i) stops.push_back(absl::StrCat("s", i));
  error = Refusal(json{{"prompt", "x"}, {"stop", stops}}.dump(), Endpoint::kCompletions);
  EXPECT_EQ(error.param, "stop");

  json tools = json::array();
  for (size_t i = 0; i <= limits.max_tools; ++i) {
    tools.push_back({{"type", "function"}, {"function", {{"name", absl::StrCat("f", i)}}}});
  }
  error = Refusal(json{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tools", tools}}.dump());
  EXPECT_EQ(error.param, "tools");
  EXPECT_EQ(error.code, "limit_exceeded");

  json bias = json::object();
  for (size_t i = 0; i <= limits.max_logit_bias; ++i) bias[absl::StrCat(i)] = 1;
  error = Refusal(json{{"prompt", "x"}, {"logit_bias", bias}}.dump(), Endpoint::kCompletions);
  EXPECT_EQ(error.param, "logit_bias");
  EXPECT_EQ(error.code, "limit_exceeded");

  // At the limits the body passes these checks.
  messages.erase(messages.begin());
  EXPECT_TRUE(CheckRequestLimits(json{{"messages", messages}}, limits).ok());
}

TEST(RequestLimitsTest, BodySizeLimit) {
  RequestLimits limits;
  limits.max_body_bytes = 100;
  absl::StatusOr<json> big = ParseJsonWithLimits(absl::StrCat(R"({"prompt":")", std::string(200, 'a'), "\"}"), limits);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("100"), std::string::npos);
}

}  // namespace
}  // namespace moemesh::router
