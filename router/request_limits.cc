#include "router/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "router/openai_api.h"

namespace moemesh::router {
namespace {

using json = nlohmann::ordered_json;

// Thrown from the parser callback to abort a parse that went too deep (caught below, never
// leaves this file).
struct TooDeep {};

absl::Status LimitError(const std::string& param, const std::string& what, size_t count,
                        size_t limit) {
  return ApiStatus(absl::StatusCode::kInvalidArgument,
                   absl::StrCat("'", param, "' holds ", count, " ", what, "; the limit is ", limit),
                   param, "limit_exceeded");
}

absl::Status CheckCount(const json& body, const char* field, const char* what, size_t limit) {
  auto it = body.find(field);
  if (it == body.end() || !(it->is_array() || it->is_object())) return absl::OkStatus();
  if (it->size() > limit) return LimitError(field, what, it->size(), limit);
  return absl::OkStatus();
}

}  // namespace

const RequestLimits& DefaultRequestLimits() {
  static const RequestLimits limits;
  return limits;
}

absl::StatusOr<json> ParseJsonWithLimits(std::string_view body, const RequestLimits& limits) {
  if (body.size() > limits.max_body_bytes) {
    return ApiStatus(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("the request body holds ", body.size(),
                                  " bytes; the limit is ", limits.max_body_bytes),
                     "", "limit_exceeded");
  }
  const int max_depth = limits.max_json_depth;
  // `depth` counts the containers open around the value; a container starting at depth d is
  // nesting level d + 1.
  json::parser_callback_t check = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start ||
         event == json::parse_event_t::array_start) &&
        depth + 1 > max_depth) {
      throw TooDeep{};
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(body.begin(), body.end(), check, /*allow_exceptions=*/false);
  } catch (const TooDeep&) {
    return ApiStatus(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("the request body nests arrays/objects deeper than ", max_depth,
                                  " levels"),
                     "", "json_too_deep");
  }
  if (parsed.is_discarded()) {
    return ApiStatus(absl::StatusCode::kInvalidArgument,
                     "the request body is not valid JSON (or holds an invalid escape such as a lone "
                     "UTF-16 surrogate)");
  }
  return parsed;
}

absl::Status CheckRequestLimits(const json& body, const RequestLimits& limits) {
  if (!body.is_object()) return absl::OkStatus();
  if (auto s = CheckCount(body, "messages", "messages", limits.max_messages); !s.ok()) return s;
  if (auto s = CheckCount(body, "stop", "stop strings", limits.max_stop); !s.ok()) return s;
  if (auto s = CheckCount(body, "tools", "tools", limits.max_tools); !s.ok()) return s;
  if (auto s = CheckCount(body, "logit_bias", "entries", limits.max_logit_bias); !s.ok()) {
    return s;
  }
  auto messages = body.find("messages");
  if (messages != body.end() && messages->is_array()) {
    for (size_t i = 0; i < messages->size(); ++i) {
      const json& message = (*messages)[i];
      if (!message.is_object()) continue;
      auto content = message.find("content");
      if (content != message.end() && content->is_array() &&
          content->size() > limits.max_content_parts) {
        return LimitError(absl::StrCat("messages[", i, "].content"), "content parts",
                          content->size(), limits.max_content_parts);
      }
      auto tool_calls = message.find("tool_calls");
      if (tool_calls != message.end() && tool_calls->is_array() &&
          tool_calls->size() > limits.max_tools) {
        return LimitError(absl::StrCat("messages[", i, "].tool_calls"), "tool calls",
                          tool_calls->size(), limits.max_tools);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseLimitedBody(std::string_view body, const RequestLimits& limits) {
  absl::StatusOr<json> parsed = ParseJsonWithLimits(body, limits);
  if (!parsed.ok()) return parsed.status();
  if (absl::Status status = CheckRequestLimits(*parsed, limits); !status.ok()) return status;
  return parsed;
}

}  // namespace moemesh::router
