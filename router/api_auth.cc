#include "router/api_auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moemesh::router {
namespace {

// Compares without an early exit, so that the time taken says nothing about the key.
bool SameKey(std::string_view given, std::string_view key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i]) ^
            static_cast<unsigned char>(key.empty() ? 0 : key[i % key.size()]);
  }
  return diff == 0;
}

bool AnyKey(std::string_view given, const std::vector<std::string>& keys) {
  bool found = false;
  for (const std::string& key : keys) found |= SameKey(given, key);
  return found;
}

ApiError Unauthorized(std::string message) {
  ApiError error;
  error.http_status = 401;
  error.type = "invalid_request_error";
  error.code = "invalid_api_key";
  error.message = std::move(message);
  return error;
}

bool StartsWithSegment(std::string_view path, std::string_view prefix) {
  return path == prefix ||
         (path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix &&
          path[prefix.size()] == '/');
}

}  // namespace

PathClass ClassifyPath(std::string_view path) {
  if (StartsWithSegment(path, "/admin") || StartsWithSegment(path, "/v1/admin") ||
      StartsWithSegment(path, "/v1/placement")) {
    return PathClass::kAdmin;
  }
  if (StartsWithSegment(path, "/v1")) return PathClass::kApi;
  return PathClass::kOperations;
}

std::optional<ApiError> CheckApiAuth(const ApiAuthOptions& options, const HttpRequest& request) {
  if (!options.enabled()) return std::nullopt;
  const PathClass kind = ClassifyPath(request.path);
  if (kind == PathClass::kOperations && !options.protect_operations) return std::nullopt;
  std::optional<std::string_view> header = request.Header("authorization");
  std::string token;
  if (header) {
    absl::string_view value = absl::StripAsciiWhitespace(absl::string_view(header->data(), header->size()));
    if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      token = std::string(absl::StripAsciiWhitespace(value.substr(7)));
    }
  }
  if (kind == PathClass::kAdmin) {
    if (options.admin_api_keys.empty()) {
      ApiError error = ApiErrorFromHttpStatus(
          403, "admin endpoints are disabled: the router was started without --admin-api-key");
      error.type = "permission_error";
      return error;
    }
    if (token.empty()) {
      return Unauthorized(request.path + " needs an admin key: 'Authorization: Bearer <key>'");
    }
    if (!AnyKey(token, options.admin_api_keys)) return Unauthorized("invalid admin API key");
    return std::nullopt;
  }
  if (token.empty()) {
    return Unauthorized(
        "missing API key: send it as 'Authorization: Bearer <key>' (see the router's --api-key)");
  }
  if (AnyKey(token, options.api_keys) || AnyKey(token, options.admin_api_keys)) {
    return std::nullopt;
  }
  return Unauthorized("invalid API key");
}

absl::StatusOr<std::vector<std::string>> CollectApiKeys(const std::vector<std::string>& values,
                                                        const std::string& key_file,
                                                        const char* env_value) {
  std::vector<std::string> keys;
  auto add_list = [&keys](absl::string_view list) {
    for (absl::string_view key : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
      keys.emplace_back(absl::StripAsciiWhitespace(key));
    }
  };
  for (const std::string& value : values) add_list(value);
  if (env_value != nullptr) add_list(env_value);
  if (!key_file.empty()) {
    std::ifstream in(key_file);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read API key file ", key_file));
    std::string line;
    while (std::getline(in, line)) {
      absl::string_view key = absl::StripAsciiWhitespace(line);
      if (key.empty() || key.front() == '#') continue;
      keys.emplace_back(key);
    }
  }
  for (const std::string& key : keys) {
    for (char c : key) {
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
        return absl::InvalidArgumentError("an API key holds a space or a non-printable character");
      }
    }
  }
  return keys;
}

}  // namespace moemesh::router
