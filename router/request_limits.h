// Limits on what one OpenAI request body may hold, enforced on the raw body before (and while)
// it is parsed: the JSON nesting depth is checked during the parse (a body nesting 60,000 '['
// stops at depth `max_json_depth`, nothing recurses), then the counts of messages, content
// parts, stop strings, tools and logit_bias entries. Each refusal is a 400 (InvalidArgument via
// ApiStatus) whose message names the limit, with `param` set and code "limit_exceeded" (or
// "json_too_deep"). ParseRequest (openai_api.h) parses every body through ParseLimitedBody.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moemesh::router {

struct RequestLimits {
  int max_json_depth = 64;              // nested arrays/objects, the top-level object is 1
  size_t max_body_bytes = 32u << 20;    // the HTTP transport enforces the same (413)
  size_t max_messages = 2048;           // chat `messages`
  size_t max_content_parts = 256;       // parts of one message's `content` array
  size_t max_stop = 16;                 // `stop` strings (openai_api.h kMaxStopStrings)
  size_t max_tools = 128;               // `tools`
  size_t max_logit_bias = 1024;         // `logit_bias` entries
};

// The default limits (what ParseRequest applies).
const RequestLimits& DefaultRequestLimits();

// Parses `body` as JSON, refusing (400) a body over max_body_bytes, a nesting deeper than
// max_json_depth (during the parse), and malformed JSON (the message ParseRequest always gave).
absl::StatusOr<nlohmann::ordered_json> ParseJsonWithLimits(std::string_view body,
                                                   const RequestLimits& limits);

// The count limits on a parsed request body (any endpoint; absent or mistyped fields are left
// to the request's own validation).
absl::Status CheckRequestLimits(const nlohmann::ordered_json& body, const RequestLimits& limits);

// ParseJsonWithLimits, then CheckRequestLimits.
absl::StatusOr<nlohmann::ordered_json> ParseLimitedBody(std::string_view body,
                                                const RequestLimits& limits = DefaultRequestLimits());

}  // namespace moemesh::router
