#include "tools/moemesh/arguments.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moemesh::cli {

std::optional<std::string> ParsedArguments::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

const std::vector<std::string>& ParsedArguments::GetAll(const std::string& name) const {
  static const std::vector<std::string> kEmpty;
  auto it = values_.find(name);
  return it == values_.end() ? kEmpty : it->second;
}

absl::StatusOr<int64_t> ParsedArguments::GetInt(const std::string& name,
                                                int64_t default_value) const {
  std::optional<std::string> value = Get(name);
  if (!value) return default_value;
  int64_t parsed;
  if (!absl::SimpleAtoi(*value, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", *value, "' is not an integer"));
  }
  return parsed;
}

absl::StatusOr<double> ParsedArguments::GetDouble(const std::string& name,
                                                  double default_value) const {
  std::optional<std::string> value = Get(name);
  if (!value) return default_value;
  double parsed;
  if (!absl::SimpleAtod(*value, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", *value, "' is not a number"));
  }
  return parsed;
}

absl::StatusOr<ParsedArguments> ParseArguments(const Arguments& arguments,
                                               const std::vector<OptionSpec>& specs) {
  ParsedArguments parsed;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const std::string& argument = arguments[i];
    if (argument.size() < 3 || argument.rfind("--", 0) != 0) {
      parsed.positionals_.push_back(argument);
      continue;
    }
    std::string name = argument.substr(2);
    std::optional<std::string> inline_value;
    if (size_t equals = name.find('='); equals != std::string::npos) {
      inline_value = name.substr(equals + 1);
      name = name.substr(0, equals);
    }
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& candidate : specs) {
      if (candidate.name == name) spec = &candidate;
    }
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    if (spec->boolean) {
      parsed.values_[name].push_back(inline_value.value_or("true"));
      continue;
    }
    if (inline_value) {
      parsed.values_[name].push_back(*inline_value);
    } else if (i + 1 < arguments.size()) {
      parsed.values_[name].push_back(arguments[++i]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("option --", name, " needs a value"));
    }
  }
  return parsed;
}

}  // namespace moemesh::cli
