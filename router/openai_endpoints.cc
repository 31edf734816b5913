// vLLM's /tokenize and /detokenize, and /version: plain functions of the request body, so that
// any HTTP layer can route them.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/text/utf8.h"
#include "router/openai_internal.h"

namespace moemesh::router {
namespace {

using internal::BadParam;
using internal::GetBool;
using internal::Json;
using text::TokenId;

JsonReply ErrorReply(const absl::Status& status) {
  const ApiError error = ToApiError(status);
  return {error.http_status, ErrorJson(error)};
}

// The body as a JSON object, or a 400.
absl::StatusOr<Json> ParseBody(std::string_view body) {
  if (!text::IsValidUtf8(body)) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body is not valid UTF-8");
  }
  Json parsed = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return ApiStatus(absl::StatusCode::kInvalidArgument, "the request body must be a JSON object");
  }
  return parsed;
}

absl::Status CheckModel(const Json& body, const ModelInfo& model) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return BadParam("model", "'model' must be a string");
  if (it->get<std::string>() != model.served_name) {
    return ApiStatus(absl::StatusCode::kNotFound,
                     absl::StrCat("The model '", it->get<std::string>(),
                                  "' does not exist; this server serves '", model.served_name, "'"),
                     "model", "model_not_found");
  }
  return absl::OkStatus();
}

absl::Status CheckOnly(const Json& body, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : body.items()) {
    bool found = false;
    for (const char* name : known) found = found || key == name;
    if (!found) {
      return BadParam(key, absl::StrCat("Unrecognized request argument supplied: '", key, "'"));
    }
  }
  return absl::OkStatus();
}

// A token as Hugging Face's convert_ids_to_tokens writes it: special tokens as their text,
// others in the byte-level alphabet (GPT-2's bytes_to_unicode: " " is "Ġ", "\n" is "Ċ").
std::string TokenString(const text::Tokenizer& tokenizer, TokenId id) {
  const std::string_view bytes = tokenizer.TokenBytes(id);
  if (tokenizer.IsSpecial(id)) return std::string(bytes);
  std::string out;
  for (unsigned char b : bytes) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    uint32_t cp = b;
    if (!printable) {
      // The non-printable bytes take 256, 257, ... in byte order.
      uint32_t rank = 0;
      for (uint32_t x = 0; x < b; ++x) {
        const bool p = (x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || x >= 0xae;
        if (!p) ++rank;
      }
      cp = 256 + rank;
    }
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  return out;
}

absl::StatusOr<std::vector<TokenId>> TokenizeRequest(const Json& body, const ModelInfo& model,
                                                     bool* add_special_tokens_out) {
  if (absl::Status status = CheckModel(body, model); !status.ok()) return status;
  const bool chat = body.contains("messages");
  if (chat) {
    if (absl::Status status = CheckOnly(body, {"model", "messages", "tools", "add_generation_prompt",
                                                "chat_template_kwargs", "add_special_tokens",
                                                "return_token_strs"});
        !status.ok()) {
      return status;
    }
    ApiRequest request;
    if (absl::Status status = internal::ParseMessages(body, &request); !status.ok()) return status;
    if (absl::Status status = internal::ParseTools(body, &request); !status.ok()) return status;
    if (absl::Status status = GetBool(body, "add_generation_prompt", &request.add_generation_prompt);
        !status.ok()) {
      return status;
    }
    text::ChatInput input;
    input.messages = request.messages;
    input.tools = request.tools;
    input.add_generation_prompt = request.add_generation_prompt;
    if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
      input.kwargs = body["chat_template_kwargs"];
    }
    absl::StatusOr<std::string> prompt = text::RenderChat(model.chat_template, input);
    if (!prompt.ok()) return BadParam("messages", std::string(prompt.status().message()));
    bool add_special_tokens = false;  // the template writes BOS itself
    if (absl::Status status = GetBool(body, "add_special_tokens", &add_special_tokens); !status.ok()) {
      return status;
    }
    std::vector<TokenId> ids;
    if (add_special_tokens && model.bos_token_id) ids.push_back(*model.bos_token_id);
    std::vector<TokenId> encoded = model.tokenizer->Encode(*prompt);
    ids.insert(ids.end(), encoded.begin(), encoded.end());
    *add_special_tokens_out = add_special_tokens;
    return ids;
  }
  if (absl::Status status = CheckOnly(body, {"model", "prompt", "add_special_tokens", "return_token_strs"});
      !status.ok()) {
    return status;
  }
  auto prompt = body.find("prompt");
  if (prompt == body.end() || !prompt->is_string()) {
    return BadParam("prompt", "'prompt' (a string) or 'messages' is required");
  }
  bool add_special_tokens = true;
  if (absl::Status status = GetBool(body, "add_special_tokens", &add_special_tokens); !status.ok()) {
    return status;
  }
  std::vector<TokenId> ids;
  if (add_special_tokens && model.bos_token_id) ids.push_back(*model.bos_token_id);
  std::vector<TokenId> encoded = model.tokenizer->Encode(prompt->get<std::string>());
  ids.insert(ids.end(), encoded.begin(), encoded.end());
  *add_special_tokens_out = add_special_tokens;
  return ids;
}

}  // namespace

JsonReply TokenizeEndpoint(std::string_view body, const ModelInfo& model) {
  absl::StatusOr<Json> parsed = ParseBody(body);
  if (!parsed.ok()) return ErrorReply(parsed.status());
  bool add_special_tokens = false;
  absl::StatusOr<std::vector<TokenId>> ids = TokenizeRequest(*parsed, model, &add_special_tokens);
  if (!ids.ok()) return ErrorReply(ids.status());
  bool return_token_strs = false;
  if (absl::Status status = GetBool(*parsed, "return_token_strs", &return_token_strs); !status.ok()) {
    return ErrorReply(status);
  }
  nlohmann::json reply = {{"count", ids->size()},
                          {"max_model_len", model.max_model_len},
                          {"tokens", *ids},
                          {"token_strs", nullptr}};
  if (return_token_strs) {
    nlohmann::json strs = nlohmann::json::array();
    for (TokenId id : *ids) strs.push_back(TokenString(*model.tokenizer, id));
    reply["token_strs"] = std::move(strs);
  }
  return {200, std::move(reply)};
}

JsonReply DetokenizeEndpoint(std::string_view body, const ModelInfo& model) {
  absl::StatusOr<Json> parsed = ParseBody(body);
  if (!parsed.ok()) return ErrorReply(parsed.status());
  if (absl::Status status = CheckModel(*parsed, model); !status.ok()) return ErrorReply(status);
  if (absl::Status status = CheckOnly(*parsed, {"model", "tokens"}); !status.ok()) {
    return ErrorReply(status);
  }
  auto tokens = parsed->find("tokens");
  if (tokens == parsed->end() || !tokens->is_array()) {
    return ErrorReply(BadParam("tokens", "'tokens' (an array of token ids) is required"));
  }
  std::vector<TokenId> ids;
  for (const Json& id : *tokens) {
    TokenId token = 0;
    if (absl::Status status = internal::GetTokenId(id, "tokens", model.vocab_size, &token);
        !status.ok()) {
      return ErrorReply(status);
    }
    ids.push_back(token);
  }
  return {200, {{"prompt", model.tokenizer->Decode(ids, /*skip_special_tokens=*/false)}}};
}

JsonReply VersionEndpoint() { return {200, {{"version", std::string(ServerVersion())}}}; }

}  // namespace moemesh::router
