// Helpers shared by the router's openai_*.cc files (not part of the API layer's interface):
// field checks that answer a 400 naming the parameter.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "router/openai_api.h"

namespace moemesh::router::internal {

// Request bodies are read with their key order kept (the chat template sees tools and
// messages as sent).
using Json = nlohmann::ordered_json;

// InvalidArgument with `param` attached.
absl::Status BadParam(std::string_view param, std::string_view message);
std::string TypeName(const Json& value);

// Optional fields of `body` (null or absent leaves *out untouched), each 400 on a wrong type or
// a value outside its range.
absl::Status GetNumber(const Json& body, const char* name, double lo, double hi, bool lo_open,
                       std::optional<double>* out);
absl::Status GetInteger(const Json& body, const char* name, int64_t lo, int64_t hi,
                        std::optional<int64_t>* out);  // integral floats accepted
absl::Status GetBool(const Json& body, const char* name, bool* out);
// A token id in [0, vocab_size).
absl::Status GetTokenId(const Json& value, const std::string& param, int64_t vocab_size,
                        text::TokenId* out);

// Request parts (openai_validation.cc).
absl::Status ParseMessages(const Json& body, ApiRequest* request);
absl::Status ParseTools(const Json& body, ApiRequest* request);
absl::Status ParsePrompts(const Json& body, const ModelInfo& model, ApiRequest* request);
absl::Status ParseStop(const Json& body, ApiRequest* request);
absl::Status ParseSeed(const Json& body, ApiRequest* request);
// logit_bias: {"token id": bias}, ids in the vocabulary, biases in [-100, 100].
absl::Status ParseLogitBias(const Json& body, const ModelInfo& model, ApiRequest* request);

}  // namespace moemesh::router::internal
