// Field-level checks of OpenAI request bodies: each answers a 400 naming the parameter.
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "router/openai_internal.h"

namespace moemesh::router::internal {

using text::TokenId;

absl::Status BadParam(std::string_view param, std::string_view message) {
  return ApiStatus(absl::StatusCode::kInvalidArgument, message, param);
}

std::string TypeName(const Json& value) { return std::string(value.type_name()); }

// Optional number in [lo, hi] (null or absent -> nullopt).
absl::Status GetNumber(const Json& body, const char* name, double lo, double hi, bool lo_open,
                       std::optional<double>* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return BadParam(name, absl::StrCat("'", name, "' must be a number, not ", TypeName(*it)));
  }
  double value = it->get<double>();
  if (!std::isfinite(value) || value > hi || (lo_open ? value <= lo : value < lo)) {
    return BadParam(name, absl::StrCat("'", name, "' must be in ", lo_open ? "(" : "[", lo, ", ",
                                       hi, "], got ", value));
  }
  *out = value;
  return absl::OkStatus();
}

// Optional integer (integral floats accepted) in [lo, hi].
absl::Status GetInteger(const Json& body, const char* name, int64_t lo, int64_t hi,
                        std::optional<int64_t>* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return BadParam(name, absl::StrCat("'", name, "' must be an integer, not ", TypeName(*it)));
  }
  int64_t value = 0;
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) {
      return BadParam(name, absl::StrCat("'", name, "' must be at most ", hi, ", got ", u));
    }
    value = static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    value = it->get<int64_t>();
  } else {
    double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) {
      return BadParam(name, absl::StrCat("'", name, "' must be an integer, got ", d));
    }
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
      return BadParam(name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "], got ", d));
    }
    value = static_cast<int64_t>(d);
  }
  if (value < lo || value > hi) {
    return BadParam(name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "], got ", value));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status GetBool(const Json& body, const char* name, bool* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return BadParam(name, absl::StrCat("'", name, "' must be a boolean, not ", TypeName(*it)));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

// A token id in [0, vocab_size).
absl::Status GetTokenId(const Json& value, const std::string& param, int64_t vocab_size,
                        TokenId* out) {
  if (!value.is_number_integer() && !value.is_number_unsigned()) {
    return BadParam(param, absl::StrCat("'", param, "' must hold integer token ids, found ",
                                        TypeName(value)));
  }
  bool negative = value.is_number_integer() && !value.is_number_unsigned() &&
                  value.get<int64_t>() < 0;
  if (negative || value.get<uint64_t>() >= static_cast<uint64_t>(vocab_size)) {
    return BadParam(param, absl::StrCat("token id ", value.dump(), " in '", param,
                                        "' is outside the vocabulary [0, ", vocab_size, ")"));
  }
  *out = static_cast<TokenId>(value.get<int64_t>());
  return absl::OkStatus();
}


namespace {

// Text content: a string, or an array of {"type":"text","text":...} parts.
absl::Status CheckContent(const Json& content, const std::string& param, bool allow_null) {
  if (content.is_string()) return absl::OkStatus();
  if (content.is_null()) {
    if (allow_null) return absl::OkStatus();
    return BadParam(param, absl::StrCat("'", param, "' is required"));
  }
  if (!content.is_array()) {
    return BadParam(param, absl::StrCat("'", param, "' must be a string or an array of text parts, not ",
                                        TypeName(content)));
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    std::string part_param = absl::StrCat(param, "[", i, "]");
    if (!part.is_object()) {
      return BadParam(part_param, absl::StrCat("'", part_param, "' must be an object"));
    }
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get<std::string>() != "text") {
      return BadParam(part_param, absl::StrCat("'", part_param,
                                               "': only parts of type \"text\" are supported"));
    }
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) {
      return BadParam(part_param + ".text", absl::StrCat("'", part_param, ".text' must be a string"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckToolCalls(const Json& tool_calls, const std::string& param) {
  if (!tool_calls.is_array()) {
    return BadParam(param, absl::StrCat("'", param, "' must be an array"));
  }
  for (size_t i = 0; i < tool_calls.size(); ++i) {
    const Json& call = tool_calls[i];
    std::string call_param = absl::StrCat(param, "[", i, "]");
    if (!call.is_object()) return BadParam(call_param, absl::StrCat("'", call_param, "' must be an object"));
    auto type = call.find("type");
    if (type != call.end() && !type->is_null() &&
        (!type->is_string() || type->get<std::string>() != "function")) {
      return BadParam(call_param + ".type",
                      absl::StrCat("'", call_param, ".type' must be \"function\""));
    }
    auto function = call.find("function");
    if (function == call.end() || !function->is_object()) {
      return BadParam(call_param + ".function",
                      absl::StrCat("'", call_param, ".function' must be an object"));
    }
    auto name = function->find("name");
    if (name == function->end() || !name->is_string()) {
      return BadParam(call_param + ".function.name",
                      absl::StrCat("'", call_param, ".function.name' must be a string"));
    }
    auto arguments = function->find("arguments");
    if (arguments != function->end() && !arguments->is_string() && !arguments->is_object()) {
      return BadParam(call_param + ".function.arguments",
                      absl::StrCat("'", call_param,
                                   ".function.arguments' must be a string or an object"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseMessages(const Json& body, ApiRequest* request) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return BadParam("messages", "'messages' is required");
  if (!it->is_array()) {
    return BadParam("messages", absl::StrCat("'messages' must be an array, not ", TypeName(*it)));
  }
  if (it->empty()) return BadParam("messages", "'messages' must not be empty");
  Json messages = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    Json message = (*it)[i];
    std::string param = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) return BadParam(param, absl::StrCat("'", param, "' must be an object"));
    auto role_it = message.find("role");
    if (role_it == message.end() || !role_it->is_string()) {
      return BadParam(param + ".role", absl::StrCat("'", param, ".role' must be a string"));
    }
    std::string role = role_it->get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for system
    message["role"] = role;
    auto content = message.find("content");
    const Json null_content;
    const Json& content_value = content == message.end() ? null_content : *content;
    std::string content_param = param + ".content";
    if (role == "system" || role == "user" || role == "tool") {
      if (auto status = CheckContent(content_value, content_param, /*allow_null=*/false);
          !status.ok()) {
        return status;
      }
    } else if (role == "assistant") {
      if (auto status = CheckContent(content_value, content_param, /*allow_null=*/true);
          !status.ok()) {
        return status;
      }
      auto tool_calls = message.find("tool_calls");
      if (tool_calls != message.end() && !tool_calls->is_null()) {
        if (auto status = CheckToolCalls(*tool_calls, param + ".tool_calls"); !status.ok()) {
          return status;
        }
      } else if (tool_calls != message.end()) {
        message.erase("tool_calls");  // null is absent
      }
    } else {
      return BadParam(param + ".role",
                      absl::StrCat("unknown role '", role, "' in '", param,
                                   ".role' (expected system, user, assistant or tool)"));
    }
    // Text parts become one string (the templates concatenate content as text).
    auto parts = message.find("content");
    if (parts != message.end() && parts->is_array()) {
      std::string text;
      for (const Json& part : *parts) text += part["text"].get<std::string>();
      *parts = text;
    }
    // Many clients send "content": "" beside tool calls; DeepSeek's templates render the calls
    // only when the content is null, so an empty content is null here.
    if (role == "assistant" && message.contains("tool_calls") && !message["tool_calls"].empty() &&
        message.contains("content") && message["content"].is_string() &&
        message["content"].get<std::string>().empty()) {
      message["content"] = nullptr;
    }
    messages.push_back(std::move(message));
  }
  request->messages = std::move(messages);
  return absl::OkStatus();
}

absl::Status ParseTools(const Json& body, ApiRequest* request) {
  bool tools_present = false;
  auto tools = body.find("tools");
  if (tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return BadParam("tools", "'tools' must be an array");
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& tool = (*tools)[i];
      std::string param = absl::StrCat("tools[", i, "]");
      if (!tool.is_object()) return BadParam(param, absl::StrCat("'", param, "' must be an object"));
      auto type = tool.find("type");
      if (type == tool.end() || !type->is_string() || type->get<std::string>() != "function") {
        return BadParam(param + ".type", absl::StrCat("'", param, ".type' must be \"function\""));
      }
      auto function = tool.find("function");
      if (function == tool.end() || !function->is_object()) {
        return BadParam(param + ".function",
                        absl::StrCat("'", param, ".function' must be an object"));
      }
      auto name = function->find("name");
      if (name == function->end() || !name->is_string() || name->get<std::string>().empty()) {
        return BadParam(param + ".function.name",
                        absl::StrCat("'", param, ".function.name' must be a non-empty string"));
      }
    }
    tools_present = !tools->empty();
    request->tools = *tools;
  }
  bool choice_none = false;
  auto choice = body.find("tool_choice");
  if (choice != body.end() && !choice->is_null()) {
    if (!choice->is_string()) {
      return BadParam("tool_choice",
                      "'tool_choice' must be \"auto\" or \"none\" (forcing a function is not supported)");
    }
    std::string value = choice->get<std::string>();
    if (value == "none") {
      choice_none = true;
    } else if (value != "auto") {
      return BadParam("tool_choice", absl::StrCat("'tool_choice' must be \"auto\" or \"none\", got \"",
                                                  value, "\""));
    }
  }
  request->tools_offered = tools_present && !choice_none;
  if (auto status = GetBool(body, "parallel_tool_calls", &request->parallel_tool_calls); !status.ok()) {
    return status;
  }
  return absl::OkStatus();
}

absl::Status ParsePrompts(const Json& body, const ModelInfo& model, ApiRequest* request) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return BadParam("prompt", "'prompt' is required");
  auto ids_from = [&](const Json& array, const std::string& param) -> absl::Status {
    if (array.empty()) return BadParam(param, absl::StrCat("'", param, "' must not be empty"));
    CompletionPrompt prompt;
    prompt.ids.reserve(array.size());
    for (const Json& id : array) {
      TokenId token = 0;
      if (auto status = GetTokenId(id, param, model.vocab_size, &token); !status.ok()) return status;
      prompt.ids.push_back(token);
    }
    request->prompts.push_back(std::move(prompt));
    return absl::OkStatus();
  };
  auto text_from = [&](const Json& text, const std::string& param) -> absl::Status {
    if (text.get<std::string>().empty()) {
      return BadParam(param, absl::StrCat("'", param, "' must not be empty"));
    }
    request->prompts.push_back(CompletionPrompt{text.get<std::string>(), {}});
    return absl::OkStatus();
  };
  if (it->is_string()) return text_from(*it, "prompt");
  constexpr char kShape[] =
      "'prompt' must be a string, an array of token ids, or an array of strings or of token-id "
      "arrays (a batch)";
  if (!it->is_array()) return BadParam("prompt", absl::StrCat(kShape, ", not ", TypeName(*it)));
  if (it->empty()) return BadParam("prompt", "'prompt' must not be empty");
  if ((*it)[0].is_number()) return ids_from(*it, "prompt");
  // A batch: every element a string, or every element an array of ids.
  if (it->size() > kMaxPrompts) {
    return BadParam("prompt", absl::StrCat("'prompt' holds at most ", kMaxPrompts, " prompts"));
  }
  const bool strings = (*it)[0].is_string();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& element = (*it)[i];
    const std::string param = absl::StrCat("prompt[", i, "]");
    if (strings ? !element.is_string() : !element.is_array()) {
      return BadParam(param, absl::StrCat(kShape, "; '", param, "' is ", TypeName(element)));
    }
    absl::Status status = strings ? text_from(element, param) : ids_from(element, param);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status ParseLogitBias(const Json& body, const ModelInfo& model, ApiRequest* request) {
  auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) {
    return BadParam("logit_bias", absl::StrCat("'logit_bias' must be an object mapping token ids "
                                               "to biases, not ", TypeName(*it)));
  }
  if (it->size() > 1024) return BadParam("logit_bias", "'logit_bias' holds at most 1024 tokens");
  for (const auto& [key, value] : it->items()) {
    // Keys are token ids written as JSON strings ("50256").
    const bool digits = !key.empty() && key.size() <= 10 &&
                        key.find_first_not_of("0123456789") == std::string::npos;
    const int64_t id = digits ? std::stoll(key) : -1;
    if (id < 0 || id >= model.vocab_size) {
      return BadParam("logit_bias", absl::StrCat("'logit_bias' key \"", key,
                                                 "\" is not a token id in the vocabulary [0, ",
                                                 model.vocab_size, ")"));
    }
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < -100 ||
        value.get<double>() > 100) {
      return BadParam("logit_bias", absl::StrCat("'logit_bias' value for token ", key,
                                                 " must be a number in [-100, 100], got ",
                                                 value.dump()));
    }
    request->logit_bias.emplace_back(static_cast<TokenId>(id), value.get<float>());
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const Json& body, ApiRequest* request) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  std::vector<std::string> stop;
  if (it->is_string()) {
    stop.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const Json& s : *it) {
      if (!s.is_string()) return BadParam("stop", "'stop' must be a string or an array of strings");
      stop.push_back(s.get<std::string>());
    }
  } else {
    return BadParam("stop", "'stop' must be a string or an array of strings");
  }
  if (stop.size() > kMaxStopStrings) {
    return BadParam("stop", absl::StrCat("'stop' holds at most ", kMaxStopStrings, " strings"));
  }
  for (std::string& s : stop) {
    if (!s.empty()) request->stop.push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status ParseSeed(const Json& body, ApiRequest* request) {
  auto seed_it = body.find("seed");
  if (seed_it != body.end() && !seed_it->is_null()) {
    if (seed_it->is_number_unsigned()) {
      request->seed = seed_it->get<uint64_t>();
    } else if (seed_it->is_number_integer()) {
      request->seed = static_cast<uint64_t>(seed_it->get<int64_t>());
    } else if (seed_it->is_number_float()) {
      // Integral floats (5.0) are taken; others get the accepted range.
      const double d = seed_it->get<double>();
      constexpr double kLo = -9223372036854775808.0, kHi = 18446744073709551616.0;  // -2^63, 2^64
      if (!std::isfinite(d) || d != std::floor(d) || d < kLo || d >= kHi) {
        return BadParam("seed", absl::StrCat("'seed' must be an integer in [",
                                             std::numeric_limits<int64_t>::min(), ", ",
                                             std::numeric_limits<uint64_t>::max(), "], got ",
                                             seed_it->dump()));
      }
      request->seed = d < 0 ? static_cast<uint64_t>(static_cast<int64_t>(d)) : static_cast<uint64_t>(d);
    } else {
      return BadParam("seed", absl::StrCat("'seed' must be an integer, not ", TypeName(*seed_it)));
    }
  }

  return absl::OkStatus();
}

}  // namespace moemesh::router::internal
