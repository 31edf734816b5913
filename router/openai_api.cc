#include "router/openai_api.h"
#include "router/request_limits.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "core/text/utf8.h"

namespace moemesh::router {
namespace {

using nlohmann::json;
using text::TokenId;

constexpr char kParamPayload[] = "moemesh.dev/param";
constexpr char kCodePayload[] = "moemesh.dev/code";

std::string S(std::string_view sv) { return std::string(sv); }

absl::Status BadParam(std::string_view param, std::string_view message) {
  return ApiStatus(absl::StatusCode::kInvalidArgument, message, param);
}

std::string TypeName(const json& value) { return std::string(value.type_name()); }

// Optional number in [lo, hi] (null or absent -> nullopt).
absl::Status GetNumber(const json& body, const char* name, double lo, double hi, bool lo_open,
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
absl::Status GetInteger(const json& body, const char* name, int64_t lo, int64_t hi,
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

absl::Status GetBool(const json& body, const char* name, bool* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return BadParam(name, absl::StrCat("'", name, "' must be a boolean, not ", TypeName(*it)));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

// A token id in [0, vocab_size).
absl::Status GetTokenId(const json& value, const std::string& param, int64_t vocab_size,
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

// Text content: a string, or an array of {"type":"text","text":...} parts.
absl::Status CheckContent(const json& content, const std::string& param, bool allow_null) {
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
    const json& part = content[i];
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

absl::Status CheckToolCalls(const json& tool_calls, const std::string& param) {
  if (!tool_calls.is_array()) {
    return BadParam(param, absl::StrCat("'", param, "' must be an array"));
  }
  for (size_t i = 0; i < tool_calls.size(); ++i) {
    const json& call = tool_calls[i];
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

absl::Status ParseMessages(const json& body, ApiRequest* request) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return BadParam("messages", "'messages' is required");
  if (!it->is_array()) {
    return BadParam("messages", absl::StrCat("'messages' must be an array, not ", TypeName(*it)));
  }
  if (it->empty()) return BadParam("messages", "'messages' must not be empty");
  json messages = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    json message = (*it)[i];
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
    const json null_content;
    const json& content_value = content == message.end() ? null_content : *content;
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
        message.erase("tool_calls");
      }
    } else {
      return BadParam(param + ".role",
                      absl::StrCat("unknown role '", role, "' in '", param,
                                   ".role' (expected system, user, assistant or tool)"));
    }
    messages.push_back(std::move(message));
  }
  request->messages = std::move(messages);
  return absl::OkStatus();
}

absl::Status ParseTools(const json& body, ApiRequest* request) {
  bool tools_present = false;
  auto tools = body.find("tools");
  if (tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return BadParam("tools", "'tools' must be an array");
    for (size_t i = 0; i < tools->size(); ++i) {
      const json& tool = (*tools)[i];
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
  return absl::OkStatus();
}

absl::Status ParsePrompt(const json& body, const ModelInfo& model, ApiRequest* request) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return BadParam("prompt", "'prompt' is required");
  auto ids_from = [&](const json& array) -> absl::Status {
    if (array.empty()) return BadParam("prompt", "'prompt' must not be empty");
    request->prompt_ids.reserve(array.size());
    for (const json& id : array) {
      TokenId token = 0;
      if (auto status = GetTokenId(id, "prompt", model.vocab_size, &token); !status.ok()) {
        return status;
      }
      request->prompt_ids.push_back(token);
    }
    return absl::OkStatus();
  };
  if (it->is_string()) {
    request->prompt_text = it->get<std::string>();
    if (request->prompt_text->empty()) return BadParam("prompt", "'prompt' must not be empty");
    return absl::OkStatus();
  }
  if (!it->is_array()) {
    return BadParam("prompt", absl::StrCat("'prompt' must be a string or an array of token ids, not ",
                                           TypeName(*it)));
  }
  if (it->empty()) return BadParam("prompt", "'prompt' must not be empty");
  const json& first = (*it)[0];
  if (first.is_number()) return ids_from(*it);
  if (it->size() == 1 && first.is_string()) {
    request->prompt_text = first.get<std::string>();
    if (request->prompt_text->empty()) return BadParam("prompt", "'prompt' must not be empty");
    return absl::OkStatus();
  }
  if (it->size() == 1 && first.is_array()) return ids_from(first);
  return BadParam("prompt",
                  "'prompt' must be one string or one array of token ids; batched prompts are not "
                  "supported (send one request per prompt)");
}

absl::Status ParseStop(const json& body, ApiRequest* request) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  std::vector<std::string> stop;
  if (it->is_string()) {
    stop.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const json& s : *it) {
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Errors

absl::Status ApiStatus(absl::StatusCode code, std::string_view message, std::string_view param,
                       std::string_view error_code) {
  absl::Status status(code, absl::string_view(message.data(), message.size()));
  if (!param.empty()) status.SetPayload(kParamPayload, absl::Cord(S(param)));
  if (!error_code.empty()) status.SetPayload(kCodePayload, absl::Cord(S(error_code)));
  return status;
}

ApiError ApiErrorFromHttpStatus(int http_status, std::string message) {
  ApiError error;
  error.http_status = http_status == 0 ? 503 : http_status;
  error.message = std::move(message);
  switch (error.http_status) {
    case 400: error.type = "invalid_request_error"; break;
    case 404: error.type = "not_found_error"; break;
    case 408: case 504: error.type = "timeout_error"; break;
    case 429: error.type = "rate_limit_error"; break;
    case 503: error.type = "service_unavailable_error"; break;
    default:
      error.type = error.http_status >= 500 ? "internal_server_error" : "invalid_request_error";
  }
  return error;
}

ApiError ToApiError(const absl::Status& status) {
  int http = 500;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: http = 400; break;
    case absl::StatusCode::kNotFound: http = 404; break;
    case absl::StatusCode::kUnavailable: http = 503; break;
    case absl::StatusCode::kDeadlineExceeded: http = 504; break;
    case absl::StatusCode::kResourceExhausted: http = 429; break;
    default: http = 500;
  }
  ApiError error = ApiErrorFromHttpStatus(http, std::string(status.message()));
  if (status.code() == absl::StatusCode::kNotFound) error.type = "invalid_request_error";
  if (auto param = status.GetPayload(kParamPayload)) error.param = std::string(*param);
  if (auto code = status.GetPayload(kCodePayload)) error.code = std::string(*code);
  return error;
}

json ErrorJson(const ApiError& error) {
  json body = {{"message", error.message},
               {"type", error.type},
               {"param", error.param.empty() ? json(nullptr) : json(error.param)},
               {"code", error.code.empty() ? json(nullptr) : json(error.code)}};
  return json{{"error", std::move(body)}};
}

std::string ErrorBody(const ApiError& error) { return DumpJson(ErrorJson(error)); }

std::string DumpJson(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------
// Model

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& model_dir,
                                                       std::string served_name,
                                                       int64_t max_model_len) {
  namespace fs = std::filesystem;
  auto loaded = std::make_unique<LoadedModel>();
  ModelInfo& info = loaded->info;
  fs::path dir(model_dir);
  std::ifstream config_file(dir / "config.json");
  if (!config_file) return absl::NotFoundError(absl::StrCat("cannot read ", (dir / "config.json").string()));
  std::stringstream text;
  text << config_file.rdbuf();
  json config = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat((dir / "config.json").string(), " is not a JSON object"));
  }
  auto max_pos = config.find("max_position_embeddings");
  if (max_model_len <= 0) {
    if (max_pos == config.end() || !max_pos->is_number_integer()) {
      return absl::InvalidArgumentError("config.json lacks max_position_embeddings; pass --max-model-len");
    }
    max_model_len = max_pos->get<int64_t>();
  }
  info.max_model_len = max_model_len;
  auto vocab = config.find("vocab_size");
  if (vocab == config.end() || !vocab->is_number_integer() || vocab->get<int64_t>() <= 0) {
    return absl::InvalidArgumentError("config.json lacks a positive vocab_size");
  }
  info.vocab_size = vocab->get<int64_t>();
  auto eos = config.find("eos_token_id");
  if (eos != config.end()) {
    info.eos_token_ids.clear();
    if (eos->is_number_integer()) info.eos_token_ids.push_back(eos->get<TokenId>());
    if (eos->is_array()) {
      for (const json& id : *eos) {
        if (id.is_number_integer()) info.eos_token_ids.push_back(id.get<TokenId>());
      }
    }
    if (info.eos_token_ids.empty()) info.eos_token_ids.push_back(1);
  }

  auto tokenizer = text::Tokenizer::FromFile(model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  loaded->tokenizer = *std::move(tokenizer);
  info.tokenizer = loaded->tokenizer.get();
  auto chat_template = text::LoadChatTemplate(model_dir);
  if (!chat_template.ok()) return chat_template.status();
  info.chat_template = *chat_template;
  info.parse_reasoning = info.chat_template.kind == text::ChatTemplateKind::kDeepSeekR1;

  // add_bos_token: text prompts of /v1/completions start with BOS (as Hugging Face encodes them).
  std::ifstream tc_file(dir / "tokenizer_config.json");
  std::stringstream tc_text;
  tc_text << tc_file.rdbuf();
  json tc = json::parse(tc_text.str(), nullptr, false);
  bool add_bos = true;
  if (tc.is_object()) {
    auto it = tc.find("add_bos_token");
    if (it != tc.end() && it->is_boolean()) add_bos = it->get<bool>();
  }
  if (add_bos) info.bos_token_id = loaded->tokenizer->TokenToId(info.chat_template.bos_token);

  if (served_name.empty()) {
    fs::path p = dir;
    if (p.filename().empty()) p = p.parent_path();
    served_name = p.filename().string();
  }
  info.served_name = served_name;
  info.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  return loaded;
}

json ModelJson(const ModelInfo& model) {
  return json{{"id", model.served_name},       {"object", "model"},
              {"created", model.created},       {"owned_by", "moemesh"},
              {"root", model.served_name},      {"parent", nullptr},
              {"max_model_len", model.max_model_len}};
}

json ModelsJson(const ModelInfo& model) {
  return json{{"object", "list"}, {"data", json::array({ModelJson(model)})}};
}

ApiError ModelNotFoundError(std::string_view model_id, const ModelInfo& model) {
  return ToApiError(ApiStatus(absl::StatusCode::kNotFound,
                              absl::StrCat("The model '", S(model_id),
                                           "' does not exist; this server serves '",
                                           model.served_name, "'"),
                              "model", "model_not_found"));
}

// ---------------------------------------------------------------------------------------------
// Requests

absl::StatusOr<ApiRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                        const ModelInfo& model) {
  if (!text::IsValidUtf8(body)) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body is not valid UTF-8");
  }
  // Depth, size and count limits (request_limits.h), enforced while parsing.
  absl::StatusOr<json> limited = ParseLimitedBody(body);
  if (!limited.ok()) return limited.status();
  json parsed = *std::move(limited);
  if (!parsed.is_object()) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body must be a JSON object");
  }
  ApiRequest request;
  request.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::kChatCompletions;

  auto model_it = parsed.find("model");
  if (model_it != parsed.end() && !model_it->is_null()) {
    if (!model_it->is_string()) return BadParam("model", "'model' must be a string");
    request.model = model_it->get<std::string>();
    if (request.model != model.served_name) {
      return ApiStatus(absl::StatusCode::kNotFound,
                       absl::StrCat("The model '", request.model, "' does not exist; this server serves '",
                                    model.served_name, "'"),
                       "model", "model_not_found");
    }
  } else {
    request.model = model.served_name;
  }

  if (chat) {
    if (auto status = ParseMessages(parsed, &request); !status.ok()) return status;
    if (auto status = ParseTools(parsed, &request); !status.ok()) return status;
  } else {
    if (auto status = ParsePrompt(parsed, model, &request); !status.ok()) return status;
    bool echo = false;
    if (auto status = GetBool(parsed, "echo", &echo); !status.ok()) return status;
    if (echo) return BadParam("echo", "'echo' is not supported");
  }

  if (auto status = GetBool(parsed, "stream", &request.stream); !status.ok()) return status;
  auto options = parsed.find("stream_options");
  if (options != parsed.end() && !options->is_null()) {
    if (!options->is_object()) return BadParam("stream_options", "'stream_options' must be an object");
    if (!request.stream) {
      return BadParam("stream_options",
                      "'stream_options' is only allowed when 'stream' is true");
    }
    auto usage = options->find("include_usage");
    if (usage != options->end() && !usage->is_null()) {
      if (!usage->is_boolean()) {
        return BadParam("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
      }
      request.include_usage = usage->get<bool>();
    }
  }

  constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
  std::optional<int64_t> max_tokens, max_completion_tokens;
  if (auto status = GetInteger(parsed, "max_tokens", 1, kMaxInt32, &max_tokens); !status.ok()) {
    return status;
  }
  if (auto status = GetInteger(parsed, "max_completion_tokens", 1, kMaxInt32, &max_completion_tokens);
      !status.ok()) {
    return status;
  }
  request.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;

  std::optional<double> temperature, top_p;
  if (auto status = GetNumber(parsed, "temperature", 0.0, 2.0, false, &temperature); !status.ok()) {
    return status;
  }
  if (temperature) request.temperature = *temperature;
  if (auto status = GetNumber(parsed, "top_p", 0.0, 1.0, true, &top_p); !status.ok()) return status;
  if (top_p) request.top_p = *top_p;
  std::optional<int64_t> top_k, seed, n;
  if (auto status = GetInteger(parsed, "top_k", -1, kMaxInt32, &top_k); !status.ok()) return status;
  if (top_k) request.top_k = static_cast<int32_t>(std::max<int64_t>(*top_k, 0));
  auto seed_it = parsed.find("seed");
  if (seed_it != parsed.end() && !seed_it->is_null()) {
    if (seed_it->is_number_unsigned()) {
      request.seed = seed_it->get<uint64_t>();
    } else if (seed_it->is_number_integer()) {
      request.seed = static_cast<uint64_t>(seed_it->get<int64_t>());
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
      request.seed = d < 0 ? static_cast<uint64_t>(static_cast<int64_t>(d)) : static_cast<uint64_t>(d);
    } else {
      return BadParam("seed", absl::StrCat("'seed' must be an integer, not ", TypeName(*seed_it)));
    }
  }

  // Penalties are not implemented: the OpenAI range is checked, and only 0 is accepted.
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    std::optional<double> value;
    if (auto status = GetNumber(parsed, penalty, -2.0, 2.0, false, &value); !status.ok()) {
      return status;
    }
    if (value && *value != 0) {
      return BadParam(penalty, absl::StrCat("'", penalty, "' is not supported (only 0 is accepted)"));
    }
  }
  auto format = parsed.find("response_format");
  if (format != parsed.end() && !format->is_null()) {
    if (!format->is_object()) {
      return BadParam("response_format", "'response_format' must be an object");
    }
    auto type = format->find("type");
    if (type == format->end() || !type->is_string()) {
      return BadParam("response_format.type", "'response_format.type' must be a string");
    }
    if (type->get<std::string>() != "text") {
      return BadParam("response_format.type",
                      absl::StrCat("'response_format' of type \"", type->get<std::string>(),
                                   "\" is not supported (only \"text\")"));
    }
  }
  if (auto status = GetInteger(parsed, "n", 1, kMaxN, &n); !status.ok()) return status;
  if (n) request.n = static_cast<int>(*n);

  if (auto status = ParseStop(parsed, &request); !status.ok()) return status;
  auto stop_ids = parsed.find("stop_token_ids");
  if (stop_ids != parsed.end() && !stop_ids->is_null()) {
    if (!stop_ids->is_array()) return BadParam("stop_token_ids", "'stop_token_ids' must be an array");
    for (const json& id : *stop_ids) {
      TokenId token = 0;
      if (auto status = GetTokenId(id, "stop_token_ids", model.vocab_size, &token); !status.ok()) {
        return status;
      }
      request.stop_token_ids.push_back(token);
    }
  }
  if (auto status = GetBool(parsed, "ignore_eos", &request.ignore_eos); !status.ok()) return status;

  if (chat) {
    if (auto status = GetBool(parsed, "logprobs", &request.logprobs); !status.ok()) return status;
    std::optional<int64_t> top_logprobs;
    if (auto status = GetInteger(parsed, "top_logprobs", 0, kMaxTopLogprobs, &top_logprobs);
        !status.ok()) {
      return status;
    }
    if (top_logprobs && *top_logprobs > 0 && !request.logprobs) {
      return BadParam("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    }
    if (top_logprobs) request.top_logprobs = static_cast<int>(*top_logprobs);
  } else {
    std::optional<int64_t> logprobs;
    if (auto status = GetInteger(parsed, "logprobs", 0, kMaxTopLogprobs, &logprobs); !status.ok()) {
      return status;
    }
    if (logprobs) {
      request.logprobs = true;
      request.top_logprobs = static_cast<int>(*logprobs);
    }
  }
  if (auto status = GetBool(parsed, "return_token_ids", &request.return_token_ids); !status.ok()) {
    return status;
  }
  return request;
}

absl::StatusOr<PreparedRequest> PrepareRequest(ApiRequest request, const ModelInfo& model,
                                               std::string_view request_id) {
  PreparedRequest prepared;
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  const char* prompt_param = chat ? "messages" : "prompt";
  if (chat) {
    auto rendered = text::RenderChat(model.chat_template, request.messages,
                                     /*add_generation_prompt=*/true);
    if (!rendered.ok()) return BadParam("messages", std::string(rendered.status().message()));
    prepared.prompt_text = *std::move(rendered);
    prepared.prompt_ids = model.tokenizer->Encode(prepared.prompt_text);
  } else if (request.prompt_text) {
    prepared.prompt_text = *request.prompt_text;
    if (model.bos_token_id) prepared.prompt_ids.push_back(*model.bos_token_id);
    std::vector<TokenId> ids = model.tokenizer->Encode(prepared.prompt_text);
    prepared.prompt_ids.insert(prepared.prompt_ids.end(), ids.begin(), ids.end());
  } else {
    prepared.prompt_ids = request.prompt_ids;
  }
  if (prepared.prompt_ids.empty()) return BadParam(prompt_param, "the prompt is empty");
  for (TokenId id : prepared.prompt_ids) {
    if (id < 0 || id >= model.vocab_size) {
      return BadParam(prompt_param, absl::StrCat("prompt token id ", id,
                                                 " is outside the vocabulary [0, ", model.vocab_size, ")"));
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(prepared.prompt_ids.size());
  if (request.max_tokens) {
    if (prompt_len + *request.max_tokens > model.max_model_len) {
      // The prompt alone leaving no room is the prompt's fault, not max_tokens'.
      return BadParam(prompt_len >= model.max_model_len ? prompt_param : "max_tokens",
                      absl::StrCat("This model's maximum context length is ", model.max_model_len,
                                   " tokens. However, you requested ", prompt_len + *request.max_tokens,
                                   " tokens (", prompt_len, " in the prompt, ", *request.max_tokens,
                                   " in the completion). Please reduce the prompt or max_tokens."));
    }
    prepared.max_tokens = *request.max_tokens;
  } else {
    if (prompt_len >= model.max_model_len) {
      return BadParam(prompt_param,
                      absl::StrCat("This model's maximum context length is ", model.max_model_len,
                                   " tokens. However, the prompt has ", prompt_len,
                                   " tokens, leaving no room for the completion."));
    }
    prepared.max_tokens = model.max_model_len - prompt_len;
  }

  text::OutputOptions& options = prepared.output_options;
  options.parse_reasoning = chat && model.parse_reasoning;
  options.starts_in_reasoning = options.parse_reasoning && text::PromptEndsInReasoning(prepared.prompt_text);
  options.parse_tool_calls = chat && request.tools_offered;
  options.stop_strings = request.stop;
  options.stop_token_ids.clear();
  if (!request.ignore_eos) options.stop_token_ids = model.eos_token_ids;
  options.stop_token_ids.insert(options.stop_token_ids.end(), request.stop_token_ids.begin(),
                                request.stop_token_ids.end());
  options.tool_call_id_prefix = absl::StrCat("call_", S(request_id).substr(S(request_id).find('-') + 1), "_");

  for (int i = 0; i < request.n; ++i) {
    moemesh::v1::AddSequenceRequest sequence;
    sequence.set_sequence_id(absl::StrCat(S(request_id), "-", i));
    sequence.mutable_prompt_token_ids()->Assign(prepared.prompt_ids.begin(), prepared.prompt_ids.end());
    sequence.set_max_new_tokens(static_cast<uint32_t>(prepared.max_tokens));
    auto* sampling = sequence.mutable_sampling();
    sampling->set_temperature(request.temperature);
    sampling->set_top_p(request.top_p);
    sampling->set_top_k(request.top_k);
    if (request.seed) {
      sampling->set_has_seed(true);
      sampling->set_seed(*request.seed + static_cast<uint64_t>(i));
    }
    for (TokenId id : request.stop_token_ids) sequence.add_stop_token_ids(static_cast<uint32_t>(id));
    sequence.set_ignore_eos(request.ignore_eos);
    sequence.set_logprobs(request.logprobs);
    sequence.set_top_logprobs(static_cast<uint32_t>(request.top_logprobs));
    prepared.sequences.push_back(std::move(sequence));
  }
  prepared.api = std::move(request);
  return prepared;
}

std::string NewResponseId(Endpoint endpoint) {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  static const char kHex[] = "0123456789abcdef";
  std::string id = endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
  uint64_t a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) id.push_back(kHex[(a >> (4 * i)) & 15]);
  for (int i = 0; i < 8; ++i) id.push_back(kHex[(b >> (4 * i)) & 15]);
  return id;
}

// ---------------------------------------------------------------------------------------------
// Responses

struct ResponseBuilder::Choice {
  Choice(int index, const text::Tokenizer& tokenizer, text::OutputOptions options)
      : index(index), processor(tokenizer, std::move(options)) {}
  struct Logprob {
    TokenId id;
    float logprob;
    std::vector<std::pair<TokenId, float>> top;
    int64_t text_offset;
  };
  int index;
  text::OutputProcessor processor;
  text::CompletedOutput output;        // joined deltas
  std::vector<TokenId> token_ids;      // consumed generated ids
  size_t token_ids_sent = 0;           // streaming: ids already attached to a chunk
  std::vector<Logprob> logprobs;
  size_t logprobs_sent = 0;
  int64_t text_offset = 0;             // completions logprobs text_offset
  bool prompt_ids_sent = false;
  bool finished = false;
};

ResponseBuilder::ResponseBuilder(const PreparedRequest& request, const ModelInfo& model,
                                 std::string id, int64_t created)
    : request_(request),
      model_(model),
      id_(std::move(id)),
      created_(created),
      chat_(request.api.endpoint == Endpoint::kChatCompletions) {
  for (int i = 0; i < request.api.n; ++i) {
    text::OutputOptions options = request.output_options;
    options.tool_call_id_prefix = absl::StrCat(options.tool_call_id_prefix, i, "_");
    choices_.push_back(std::make_unique<Choice>(i, *model.tokenizer, std::move(options)));
  }
}

ResponseBuilder::~ResponseBuilder() = default;

bool ResponseBuilder::finished(int choice) const {
  return choice >= 0 && choice < static_cast<int>(choices_.size()) && choices_[choice]->finished;
}

std::string ResponseBuilder::finish_reason(int choice) const {
  if (!finished(choice)) return "";
  return std::string(text::FinishReasonName(choices_[choice]->output.finish_reason));
}

bool ResponseBuilder::all_finished() const {
  for (const auto& c : choices_) {
    if (!c->finished) return false;
  }
  return true;
}

int64_t ResponseBuilder::completion_tokens() const {
  int64_t total = 0;
  for (const auto& c : choices_) total += static_cast<int64_t>(c->token_ids.size());
  return total;
}

json ResponseBuilder::Usage() const {
  return json{{"prompt_tokens", prompt_tokens()},
              {"completion_tokens", completion_tokens()},
              {"total_tokens", prompt_tokens() + completion_tokens()}};
}

json ResponseBuilder::ChunkBase() const {
  json chunk = {{"id", id_},
                {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", request_.api.model}};
  if (request_.api.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

namespace {

json TokenBytesJson(std::string_view bytes) {
  json out = json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

json ToolCallsJson(const std::vector<text::ToolCall>& calls) {
  json out = json::array();
  for (const text::ToolCall& call : calls) {
    out.push_back({{"index", call.index},
                   {"id", call.id},
                   {"type", call.type.empty() ? "function" : call.type},
                   {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  return out;
}

}  // namespace

std::vector<std::string> ResponseBuilder::StartChunks() {
  std::vector<std::string> chunks;
  if (!chat_) return chunks;
  for (auto& c : choices_) {
    json chunk = ChunkBase();
    json choice = {{"index", c->index},
                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                   {"logprobs", nullptr},
                   {"finish_reason", nullptr}};
    if (request_.api.return_token_ids) {
      choice["prompt_token_ids"] = request_.prompt_ids;
      c->prompt_ids_sent = true;
    }
    chunk["choices"] = json::array({std::move(choice)});
    chunks.push_back(DumpJson(chunk));
  }
  return chunks;
}

std::string ResponseBuilder::Chunk(Choice& c, const text::OutputDelta* delta, bool final) {
  json chunk = ChunkBase();
  json choice = {{"index", c.index}};
  if (chat_) {
    json d = json::object();
    if (delta) {
      if (!delta->reasoning_content.empty()) d["reasoning_content"] = delta->reasoning_content;
      if (!delta->content.empty()) d["content"] = delta->content;
      if (!delta->tool_calls.empty()) d["tool_calls"] = ToolCallsJson(delta->tool_calls);
    }
    choice["delta"] = std::move(d);
  } else {
    choice["text"] = delta ? delta->content + delta->reasoning_content : std::string();
  }
  // Pending logprobs and token ids go with the first chunk after they arrived.
  choice["logprobs"] = nullptr;
  if (request_.api.logprobs) {
    choice["logprobs"] = EntriesJson(c, c.logprobs_sent, c.logprobs.size());
    c.logprobs_sent = c.logprobs.size();
  }
  choice["finish_reason"] =
      final ? json(std::string(text::FinishReasonName(c.output.finish_reason))) : json(nullptr);
  if (request_.api.return_token_ids) {
    if (!c.prompt_ids_sent) {
      choice["prompt_token_ids"] = request_.prompt_ids;
      c.prompt_ids_sent = true;
    }
    choice["token_ids"] = std::vector<TokenId>(c.token_ids.begin() + c.token_ids_sent, c.token_ids.end());
    c.token_ids_sent = c.token_ids.size();
  }
  chunk["choices"] = json::array({std::move(choice)});
  return DumpJson(chunk);
}


json ResponseBuilder::EntriesJson(const Choice& c, size_t begin, size_t end) const {
  const text::Tokenizer& tokenizer = *model_.tokenizer;
  auto token_text = [&](TokenId id) { return text::Utf8Lossy(tokenizer.TokenBytes(id)); };
  if (chat_) {
    json content = json::array();
    for (size_t i = begin; i < end; ++i) {
      const Choice::Logprob& lp = c.logprobs[i];
      json top = json::array();
      for (const auto& [id, logprob] : lp.top) {
        top.push_back({{"token", token_text(id)},
                       {"logprob", logprob},
                       {"bytes", TokenBytesJson(tokenizer.TokenBytes(id))}});
      }
      content.push_back({{"token", token_text(lp.id)},
                         {"logprob", lp.logprob},
                         {"bytes", TokenBytesJson(tokenizer.TokenBytes(lp.id))},
                         {"top_logprobs", std::move(top)}});
    }
    return json{{"content", std::move(content)}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  for (size_t i = begin; i < end; ++i) {
    const Choice::Logprob& lp = c.logprobs[i];
    tokens.push_back(token_text(lp.id));
    token_logprobs.push_back(lp.logprob);
    offsets.push_back(lp.text_offset);
    if (request_.api.top_logprobs > 0) {
      json top = json::object();
      for (const auto& [id, logprob] : lp.top) top[token_text(id)] = logprob;
      top_logprobs.push_back(std::move(top));
    } else {
      top_logprobs.push_back(nullptr);
    }
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top_logprobs)},
              {"text_offset", std::move(offsets)}};
}

ResponseBuilder::EventResult ResponseBuilder::OnEvent(int choice_index,
                                                      const moemesh::v1::SequenceEvent& event) {
  EventResult result;
  if (choice_index < 0 || choice_index >= static_cast<int>(choices_.size())) return result;
  Choice& c = *choices_[choice_index];
  if (c.finished) return result;
  using Event = moemesh::v1::SequenceEvent;
  if (event.finish_reason() == Event::ERROR) {
    result.error = ApiErrorFromHttpStatus(
        static_cast<int>(event.error_code()),
        event.error().empty() ? "the attention node failed the sequence" : event.error());
    return result;
  }
  if (event.finish_reason() == Event::ABORTED) {
    result.error = ApiErrorFromHttpStatus(503, "the attention node aborted the sequence");
    return result;
  }
  std::vector<text::OutputDelta> deltas;
  auto append = [&deltas](std::vector<text::OutputDelta> more) {
    for (auto& d : more) deltas.push_back(std::move(d));
  };
  const size_t max_tokens = static_cast<size_t>(request_.max_tokens);
  bool at_limit = false;
  for (const auto& token : event.tokens()) {
    if (c.processor.finished() || c.token_ids.size() >= max_tokens) break;
    const TokenId id = static_cast<TokenId>(token.token_id());
    c.token_ids.push_back(id);
    if (request_.api.logprobs) {
      Choice::Logprob lp{id, token.logprob(), {}, c.text_offset};
      for (const auto& top : token.top_logprobs()) {
        if (lp.top.size() >= static_cast<size_t>(request_.api.top_logprobs)) break;
        lp.top.emplace_back(static_cast<TokenId>(top.token_id()), top.logprob());
      }
      c.text_offset += static_cast<int64_t>(text::Utf8Lossy(model_.tokenizer->TokenBytes(id)).size());
      c.logprobs.push_back(std::move(lp));
    }
    append(c.processor.Add(id));
  }
  at_limit = !c.processor.finished() && c.token_ids.size() >= max_tokens;
  text::FinishReason reason = text::FinishReason::kNone;
  if (c.processor.finished()) {
    reason = c.processor.finish_reason();
    result.cancel_sequence = event.finish_reason() == Event::NOT_FINISHED;
  } else if (event.finish_reason() == Event::STOP) {
    // EOS or a stop id the node did not send as a token: end the processor the same way.
    if (!request_.output_options.stop_token_ids.empty()) {
      append(c.processor.Add(request_.output_options.stop_token_ids.front()));
    }
    if (c.processor.finished()) {
      reason = c.processor.finish_reason();
    } else {
      append(c.processor.Finish());
      reason = c.processor.finish_reason() == text::FinishReason::kToolCalls
                   ? text::FinishReason::kToolCalls
                   : text::FinishReason::kStop;
    }
  } else if (event.finish_reason() == Event::LENGTH || at_limit) {
    append(c.processor.Finish());
    reason = text::FinishReason::kLength;
    result.cancel_sequence = event.finish_reason() == Event::NOT_FINISHED;
  }
  for (const auto& d : deltas) {
    c.output.reasoning_content += d.reasoning_content;
    c.output.content += d.content;
    c.output.tool_calls.insert(c.output.tool_calls.end(), d.tool_calls.begin(), d.tool_calls.end());
  }
  if (reason != text::FinishReason::kNone) {
    c.finished = true;
    c.output.finish_reason = reason;
    result.choice_finished = true;
  }
  if (request_.api.stream) {
    for (const auto& d : deltas) {
      if (d.reasoning_content.empty() && d.content.empty() && d.tool_calls.empty()) continue;
      result.chunks.push_back(Chunk(c, &d, /*final=*/false));
    }
    if (c.finished) result.chunks.push_back(Chunk(c, nullptr, /*final=*/true));
  }
  return result;
}

ApiError ResponseBuilder::OnStreamEnd(int choice, const absl::Status& status) {
  if (status.ok()) {
    return ApiErrorFromHttpStatus(502, "the attention node ended the sequence without finishing it");
  }
  ApiError error = ToApiError(status);
  if (error.http_status < 500) error = ApiErrorFromHttpStatus(503, error.message);
  error.message = absl::StrCat("attention node: ", error.message);
  return error;
}

std::vector<std::string> ResponseBuilder::EndChunks() {
  std::vector<std::string> chunks;
  if (!request_.api.include_usage) return chunks;
  json chunk = ChunkBase();
  chunk["choices"] = json::array();
  chunk["usage"] = Usage();
  chunks.push_back(DumpJson(chunk));
  return chunks;
}

json ResponseBuilder::Response() const {
  json choices = json::array();
  for (const auto& c : choices_) {
    json choice = {{"index", c->index}};
    const text::CompletedOutput& out = c->output;
    if (chat_) {
      json message = {{"role", "assistant"}};
      message["content"] = out.content.empty() && !out.tool_calls.empty() ? json(nullptr)
                                                                            : json(out.content);
      if (request_.output_options.parse_reasoning) {
        message["reasoning_content"] =
            out.reasoning_content.empty() ? json(nullptr) : json(out.reasoning_content);
      }
      if (!out.tool_calls.empty()) message["tool_calls"] = ToolCallsJson(out.tool_calls);
      choice["message"] = std::move(message);
    } else {
      choice["text"] = out.content + out.reasoning_content;
    }
    choice["logprobs"] =
        request_.api.logprobs ? EntriesJson(*c, 0, c->logprobs.size()) : json(nullptr);
    choice["finish_reason"] = std::string(text::FinishReasonName(out.finish_reason));
    if (request_.api.return_token_ids) {
      choice["prompt_token_ids"] = request_.prompt_ids;
      choice["token_ids"] = c->token_ids;
    }
    choices.push_back(std::move(choice));
  }
  return json{{"id", id_},
              {"object", chat_ ? "chat.completion" : "text_completion"},
              {"created", created_},
              {"model", request_.api.model},
              {"choices", std::move(choices)},
              {"usage", Usage()}};
}

}  // namespace moemesh::router
