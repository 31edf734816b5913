// ParseRequest: the one entry point from a request body to a validated ApiRequest.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/text/utf8.h"
#include "router/openai_internal.h"

namespace moemesh::router {
namespace {

using internal::BadParam;
using internal::GetBool;
using internal::GetInteger;
using internal::GetNumber;
using internal::GetTokenId;
using internal::Json;
using internal::ParseLogitBias;
using internal::ParseMessages;
using internal::ParsePrompts;
using internal::ParseSeed;
using internal::ParseStop;
using internal::ParseTools;
using internal::TypeName;
using text::TokenId;

// Every parameter the router reads; anything else is refused (OpenAI's "Unrecognized request
// argument"), so that no accepted parameter goes without effect.
absl::Status CheckKnownParameters(const Json& body, bool chat) {
  static const char* const kCommon[] = {
      "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "seed",
      "n", "stop", "stop_token_ids", "ignore_eos", "logprobs", "presence_penalty",
      "frequency_penalty", "response_format", "return_token_ids", "logit_bias", "min_tokens",
      "user",  // an end-user id for the operator's logs; it changes nothing in the output
  };
  static const char* const kChat[] = {
      "messages", "tools", "tool_choice", "parallel_tool_calls", "top_logprobs",
      "max_completion_tokens", "chat_template_kwargs", "add_generation_prompt",
  };
  static const char* const kCompletions[] = {"prompt", "echo", "best_of", "suffix",
                                             "max_completion_tokens"};
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (const char* name : kCommon) known = known || key == name;
    if (chat) {
      for (const char* name : kChat) known = known || key == name;
    } else {
      for (const char* name : kCompletions) known = known || key == name;
    }
    if (!known) {
      return BadParam(key, absl::StrCat("Unrecognized request argument supplied: '", key,
                                        "' (not supported by this server)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApiRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                        const ModelInfo& model) {
  if (!text::IsValidUtf8(body)) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body is not valid UTF-8");
  }
  Json parsed = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return ApiStatus(absl::StatusCode::kInvalidArgument,
                     "the request body is not valid JSON (or holds an invalid escape such as a lone "
                     "UTF-16 surrogate)");
  }
  if (!parsed.is_object()) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body must be a JSON object");
  }
  ApiRequest request;
  request.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  if (auto status = CheckKnownParameters(parsed, chat); !status.ok()) return status;

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
    auto kwargs = parsed.find("chat_template_kwargs");
    if (kwargs != parsed.end() && !kwargs->is_null()) {
      if (!kwargs->is_object()) {
        return BadParam("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      }
      for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt"}) {
        if (kwargs->contains(reserved)) {
          return BadParam("chat_template_kwargs",
                          absl::StrCat("'chat_template_kwargs' may not set '", reserved, "'"));
        }
      }
      request.chat_template_kwargs = *kwargs;
    }
    if (auto status = GetBool(parsed, "add_generation_prompt", &request.add_generation_prompt);
        !status.ok()) {
      return status;
    }
  } else {
    if (auto status = ParsePrompts(parsed, model, &request); !status.ok()) return status;
    if (auto status = GetBool(parsed, "echo", &request.echo); !status.ok()) return status;
    auto suffix = parsed.find("suffix");
    if (suffix != parsed.end() && !suffix->is_null() &&
        !(suffix->is_string() && suffix->get<std::string>().empty())) {
      return BadParam("suffix", "'suffix' is not supported (DeepSeek-V3 has no fill-in-the-middle "
                                "template)");
    }
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
  if (auto status = ParseSeed(parsed, &request); !status.ok()) return status;

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
  // best_of (completions, as vLLM): best_of sequences per prompt, the n with the highest
  // cumulative logprob returned.
  std::optional<int64_t> best_of;
  if (auto status = GetInteger(parsed, "best_of", 1, kMaxBestOf, &best_of); !status.ok()) {
    return status;
  }
  request.best_of = best_of ? static_cast<int>(*best_of) : request.n;
  if (request.best_of < request.n) {
    return BadParam("best_of", absl::StrCat("'best_of' (", request.best_of,
                                            ") must be at least 'n' (", request.n, ")"));
  }
  if (request.best_of > request.n && request.stream) {
    return BadParam("best_of", "'best_of' larger than 'n' is not allowed when streaming");
  }
  std::optional<int64_t> min_tokens;
  if (auto status = GetInteger(parsed, "min_tokens", 0, kMaxInt32, &min_tokens); !status.ok()) {
    return status;
  }
  if (min_tokens) request.min_tokens = *min_tokens;
  if (auto status = ParseLogitBias(parsed, model, &request); !status.ok()) return status;

  if (auto status = ParseStop(parsed, &request); !status.ok()) return status;
  auto stop_ids = parsed.find("stop_token_ids");
  if (stop_ids != parsed.end() && !stop_ids->is_null()) {
    if (!stop_ids->is_array()) return BadParam("stop_token_ids", "'stop_token_ids' must be an array");
    for (const Json& id : *stop_ids) {
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
  if (request.echo && request.logprobs) {
    return BadParam("echo", "'echo' together with 'logprobs' is not supported (prompt logprobs are "
                            "not computed)");
  }
  if (request.max_tokens && request.min_tokens > *request.max_tokens) {
    return BadParam("min_tokens", absl::StrCat("'min_tokens' (", request.min_tokens,
                                               ") must not exceed 'max_tokens' (",
                                               *request.max_tokens, ")"));
  }
  return request;
}

}  // namespace moemesh::router
