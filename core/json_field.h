// Optional fields of JSON files we do not control (a checkpoint's config.json, tokenizer.json,
// tokenizer_config.json; a server's replies in the CLI) read without nlohmann's throwing
// accessors: json::value(key, fallback) throws when the value is not an object or the field has
// another type, and an exception must not cross our Status boundaries.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace moemesh {

// `object[key]` when `object` is an object holding `key` with T's JSON type, else `fallback`.
// T: bool, std::string, int64_t, or the JSON type itself (any value). Never throws.
template <typename T, typename Json>
T FieldOr(const Json& object, std::string_view key, T fallback) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  if (it == object.end()) return fallback;
  if constexpr (std::is_same_v<T, Json>) {
    return *it;
  } else if constexpr (std::is_same_v<T, bool>) {
    return it->is_boolean() ? it->template get<bool>() : fallback;
  } else if constexpr (std::is_same_v<T, std::string>) {
    return it->is_string() ? it->template get<std::string>() : fallback;
  } else {
    static_assert(std::is_same_v<T, int64_t>, "FieldOr: bool, std::string, int64_t or Json");
    return it->is_number_integer() ? it->template get<int64_t>() : fallback;
  }
}

}  // namespace moemesh
