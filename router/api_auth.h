// API keys of the router's HTTP front: which paths need which key, checked as
// `Authorization: Bearer <key>` (OpenAI's scheme). Three classes of path:
//  - operations: /health, /ready, /metrics, /dashboard (open unless protect_operations);
//  - API: everything under /v1/ (needs one of api_keys when any is set);
//  - admin: /admin/..., /v1/placement/..., /v1/admin/... (needs one of admin_api_keys; when API
//    keys are set but no admin key, admin paths are refused: no key would be safe to accept).
// With no key configured at all everything is open (development).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "router/http_types.h"
#include "router/openai_api.h"

namespace moemesh::router {

struct ApiAuthOptions {
  std::vector<std::string> api_keys;        // any of them opens /v1/*
  std::vector<std::string> admin_api_keys;  // any of them opens admin paths (and /v1/*)
  bool protect_operations = false;          // /health, /ready, /metrics, /dashboard need a key
  bool enabled() const { return !api_keys.empty() || !admin_api_keys.empty(); }
};

enum class PathClass { kOperations, kApi, kAdmin };
PathClass ClassifyPath(std::string_view path);

// nullopt when `request` may proceed; else the error to answer: 401 (type
// invalid_request_error, code invalid_api_key) for a missing or wrong key, 403 for an admin path
// that no configured key opens.
std::optional<ApiError> CheckApiAuth(const ApiAuthOptions& options, const HttpRequest& request);

// Keys from flag values: comma-separated lists, plus one key per non-empty line of `key_file`
// (when given; '#' starts a comment), plus the comma-separated `env_value`. NotFound / 
// InvalidArgument when the file cannot be read or a key is empty of printable characters.
absl::StatusOr<std::vector<std::string>> CollectApiKeys(const std::vector<std::string>& values,
                                                        const std::string& key_file,
                                                        const char* env_value);

}  // namespace moemesh::router
