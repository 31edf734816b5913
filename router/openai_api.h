// The router's OpenAI API layer, without networking: request bodies of /v1/chat/completions and
// /v1/completions -> validated requests -> per-choice AddSequenceRequests; SequenceEvents ->
// streaming chunks or the non-streaming response body; errors as OpenAI error bodies; the
// vLLM-style /tokenize, /detokenize and /version handlers.
// Files: openai_api.cc (errors, model, ids), openai_request.cc (ParseRequest, the one entry
// point for request bodies), openai_validation.cc (field checks), openai_prompt.cc
// (PrepareRequest), openai_response.cc (ResponseBuilder), openai_endpoints.cc (tokenize, ...).
//
// Errors are absl::Status values whose code gives the HTTP status (ToApiError): InvalidArgument
// -> 400, NotFound -> 404, Unavailable -> 503, DeadlineExceeded -> 504, others -> 500. The
// parameter a 400 is about and an OpenAI error code travel as payloads (ApiStatus).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/text/chat_template.h"
#include "core/text/output_processor.h"
#include "core/text/tokenizer.h"
#include "moemesh/v1/attention.pb.h"
#include "nlohmann/json.hpp"

namespace moemesh::router {

// ---------------------------------------------------------------------------------------------
// Errors

// An OpenAI error body: {"error":{"message","type","param","code"}} plus its HTTP status.
struct ApiError {
  int http_status = 500;
  std::string message;
  std::string type;   // invalid_request_error, not_found_error, service_unavailable_error, ...
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

// A Status carrying `param` and `code` for the error body ("" = none).
absl::Status ApiStatus(absl::StatusCode code, std::string_view message, std::string_view param = "",
                       std::string_view error_code = "");
// Status -> HTTP status, type, message, param and code.
ApiError ToApiError(const absl::Status& status);
// An error from an HTTP status (e.g. a node's error_code); 0 means 503.
ApiError ApiErrorFromHttpStatus(int http_status, std::string message);
nlohmann::json ErrorJson(const ApiError& error);
// ErrorJson serialised.
std::string ErrorBody(const ApiError& error);

// JSON text with invalid UTF-8 replaced (never throws).
std::string DumpJson(const nlohmann::json& value);

// ---------------------------------------------------------------------------------------------
// The model as the API sees it

struct ModelInfo {
  std::string served_name;           // the `model` clients must send (or omit)
  int64_t max_model_len = 0;         // prompt + completion tokens, at most
  int64_t vocab_size = 0;            // config.json vocab_size: valid ids are [0, vocab_size)
  std::vector<text::TokenId> eos_token_ids = {1};
  std::optional<text::TokenId> bos_token_id;  // prepended to text prompts of /v1/completions
  text::ChatTemplate chat_template;  // the checkpoint's own, or --chat-template's
  bool parse_reasoning = true;       // the template writes <think>: split reasoning_content
  int64_t created = 0;               // unix seconds, for /v1/models
  std::string system_fingerprint;    // "fp_" + hash of version, model and template
  const text::Tokenizer* tokenizer = nullptr;  // not owned
};

// The server's version (GET /version).
std::string_view ServerVersion();

// Reads `model_dir`: config.json (max_position_embeddings, vocab_size, eos_token_id),
// tokenizer.json and tokenizer_config.json (its chat_template, unless `chat_template_file` is
// not empty: then that file's Jinja text). Owns the tokenizer it loads. `max_model_len` <= 0
// takes max_position_embeddings; `served_name` empty takes the directory's basename.
struct LoadedModel {
  std::unique_ptr<text::Tokenizer> tokenizer;
  ModelInfo info;
};
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& model_dir,
                                                       std::string served_name,
                                                       int64_t max_model_len,
                                                       const std::string& chat_template_file = "");

// GET /v1/models body.
nlohmann::json ModelsJson(const ModelInfo& model);
// GET /v1/models/{model} body: the one model object of ModelsJson's list.
nlohmann::json ModelJson(const ModelInfo& model);
// 404 (type invalid_request_error, param "model", code model_not_found) for an unknown model id.
ApiError ModelNotFoundError(std::string_view model_id, const ModelInfo& model);

// ---------------------------------------------------------------------------------------------
// Requests

enum class Endpoint { kChatCompletions, kCompletions };

inline constexpr int kMaxN = 16;              // largest `n`
inline constexpr int kMaxTopLogprobs = 20;    // largest top_logprobs / completions logprobs
inline constexpr size_t kMaxStopStrings = 16;

inline constexpr size_t kMaxPrompts = 64;     // prompts in one /v1/completions request
inline constexpr int kMaxBestOf = kMaxN;

// One prompt of /v1/completions: text, or token ids.
struct CompletionPrompt {
  std::optional<std::string> text;
  std::vector<text::TokenId> ids;           // when no text
};

// A request body after validation (before tokenization).
struct ApiRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  // chat: the messages as the client sent them, except that "developer" is "system" and a
  // content given as text parts is joined into one string (tool-call arguments stay as sent).
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;             // chat: the `tools` list as sent, or null
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;        // extension (vLLM)
  bool parallel_tool_calls = true;          // false: at most one tool call per choice
  std::vector<CompletionPrompt> prompts;    // completions: one or more prompts
  bool echo = false;                        // completions: the prompt text starts each choice
  int best_of = 1;                          // completions: sequences per prompt (>= n)
  bool stream = false;
  bool include_usage = false;               // stream_options.include_usage
  std::optional<int64_t> max_tokens;        // max_completion_tokens, else max_tokens
  double temperature = 1.0;
  double top_p = 1.0;
  int32_t top_k = 0;                        // 0 = no limit (-1 is accepted as 0)
  std::optional<uint64_t> seed;
  int n = 1;
  std::vector<std::string> stop;            // stop strings (empty strings dropped)
  std::vector<text::TokenId> stop_token_ids;  // extension (vLLM): extra ids that end a sequence
  bool ignore_eos = false;                  // extension (vLLM)
  bool logprobs = false;                    // return each sampled token's logprob
  int top_logprobs = 0;                     // alternatives per token (0..20)
  bool tools_offered = false;               // `tools` non-empty and tool_choice != "none"
  bool return_token_ids = false;            // extension: prompt_token_ids / token_ids per choice
  std::vector<std::pair<text::TokenId, float>> logit_bias;  // added to the logits, [-100, 100]
  int64_t min_tokens = 0;                   // EOS and stop ids suppressed before this many
};

// Parses and validates a body for `endpoint` (no tokenization): 400 for malformed JSON, invalid
// UTF-8 (lone surrogate escapes included), wrong types and out-of-range values (param set);
// 404 (code model_not_found) for a `model` other than the served one.
absl::StatusOr<ApiRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                        const ModelInfo& model);

// One prompt ready to run.
struct PreparedPrompt {
  std::string text;                        // rendered chat prompt (chat), or the text prompt
  std::vector<text::TokenId> ids;
  int64_t max_tokens = 0;                  // resolved (default max_model_len - prompt length)
};

// A request ready to run: the prompts' ids, the sequences and the output options.
struct PreparedRequest {
  ApiRequest api;
  std::vector<PreparedPrompt> prompts;     // chat: one
  text::OutputOptions output_options;
  // best_of sequences per prompt, prompt after prompt: sequence s runs prompts[s / best_of].
  std::vector<moemesh::v1::AddSequenceRequest> sequences;
  int sequences_per_prompt() const { return api.best_of; }
};

// Renders the chat template, tokenizes, checks ids against the vocabulary and the context
// (400 giving both lengths when prompt + max_tokens > max_model_len), and builds best_of
// AddSequenceRequests per prompt with sequence ids `request_id`-i and seeds seed+i.
absl::StatusOr<PreparedRequest> PrepareRequest(ApiRequest request, const ModelInfo& model,
                                               std::string_view request_id);

// ---------------------------------------------------------------------------------------------
// Responses

// Turns the SequenceEvents of a request's choices into OpenAI output. Both paths run the same
// OutputProcessor per choice; the streaming chunks, joined, equal the non-streaming body.
// Not thread-safe: feed it from one thread.
class ResponseBuilder {
 public:
  // `id` is the response id ("chatcmpl-..." / "cmpl-..."); `created` unix seconds.
  ResponseBuilder(const PreparedRequest& request, const ModelInfo& model, std::string id,
                  int64_t created);
  ~ResponseBuilder();
  ResponseBuilder(const ResponseBuilder&) = delete;
  ResponseBuilder& operator=(const ResponseBuilder&) = delete;

  // What one event did.
  struct EventResult {
    std::vector<std::string> chunks;   // streaming: JSON chunks to send as `data:` (in order)
    bool choice_finished = false;      // the choice has its finish reason now
    bool cancel_sequence = false;      // finished on a stop string: abort the node's sequence
    std::optional<ApiError> error;     // the node reported an error: fail the request
  };

  // Streaming only: the chunks that open the stream (chat: role "assistant" per choice).
  std::vector<std::string> StartChunks();
  // Feeds one SequenceEvent of choice `choice`. Events after the choice finished are ignored.
  EventResult OnEvent(int choice, const moemesh::v1::SequenceEvent& event);
  // The node's stream ended with `status` before the choice finished: an error to fail with.
  ApiError OnStreamEnd(int choice, const absl::Status& status);

  bool finished(int choice) const;
  bool all_finished() const;
  // The choice's OpenAI finish reason ("stop", "length", "tool_calls", ...); "" until finished.
  std::string finish_reason(int choice) const;
  // Streaming, after all choices finished: the usage chunk when include_usage (else nothing).
  std::vector<std::string> EndChunks();
  // Non-streaming body, after all choices finished.
  nlohmann::json Response() const;
  // Tokens so far (every prompt counted once; completion tokens of every sequence).
  int64_t prompt_tokens() const;
  int64_t completion_tokens() const;

 private:
  struct Choice;
  nlohmann::json ChunkBase() const;
  nlohmann::json Usage() const;
  // One streamed chunk for `choice` with `delta` (chat) or `text` (completions); attaches the
  // choice's pending logprobs / token ids.
  std::string Chunk(Choice& choice, const text::OutputDelta* delta, bool final);
  // Logprobs of the choice's tokens [begin, end) in the endpoint's shape.
  nlohmann::json EntriesJson(const Choice& choice, size_t begin, size_t end) const;
  // The choices the response holds, in order: all, or with best_of the n best of each prompt.
  std::vector<const Choice*> ReturnedChoices() const;

  const PreparedRequest& request_;
  const ModelInfo& model_;
  std::string id_;
  int64_t created_;
  bool chat_;
  std::vector<std::unique_ptr<Choice>> choices_;
};

// Response id: "chatcmpl-" or "cmpl-" + 24 random hex digits.
std::string NewResponseId(Endpoint endpoint);

// ---------------------------------------------------------------------------------------------
// Other endpoints, as plain functions of the request body: (HTTP status, JSON body).

struct JsonReply {
  int http_status = 200;
  nlohmann::json body;
};

// POST /tokenize (vLLM): {"prompt": text} or {"messages": [...], "add_generation_prompt",
// "tools", "chat_template_kwargs"}, with "add_special_tokens" (prompt: BOS first, default true)
// and "return_token_strs" -> {"count", "max_model_len", "tokens", "token_strs"?}.
JsonReply TokenizeEndpoint(std::string_view body, const ModelInfo& model);
// POST /detokenize (vLLM): {"tokens": [ids]} -> {"prompt": text}.
JsonReply DetokenizeEndpoint(std::string_view body, const ModelInfo& model);
// GET /version: {"version": ServerVersion()}.
JsonReply VersionEndpoint();

}  // namespace moemesh::router
