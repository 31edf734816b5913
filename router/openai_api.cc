// The API layer's shared parts: error bodies, the served model, response ids.
#include "router/openai_api.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

#ifndef MOEMESH_VERSION
#define MOEMESH_VERSION "0.0.0"
#endif

namespace moemesh::router {
namespace {

using nlohmann::json;
using text::TokenId;

constexpr char kParamPayload[] = "moemesh.dev/param";
constexpr char kCodePayload[] = "moemesh.dev/code";

std::string S(std::string_view sv) { return std::string(sv); }

}  // namespace

std::string_view ServerVersion() { return MOEMESH_VERSION; }

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
                                                       int64_t max_model_len,
                                                       const std::string& chat_template_file) {
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
  auto chat_template = text::LoadChatTemplate(model_dir, chat_template_file);
  if (!chat_template.ok()) return chat_template.status();
  info.chat_template = *std::move(chat_template);
  info.parse_reasoning = info.chat_template.handles_reasoning;

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
  // Changes when the server, the model or its template changes (as OpenAI's fingerprint does).
  const uint64_t hash = std::hash<std::string>{}(absl::StrCat(
      std::string(ServerVersion()), "\n", text.str(), "\n", info.chat_template.source, "\n", served_name));
  static const char kHex[] = "0123456789abcdef";
  info.system_fingerprint = "fp_";
  for (int i = 0; i < 10; ++i) info.system_fingerprint.push_back(kHex[(hash >> (4 * i)) & 15]);
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

}  // namespace moemesh::router
