#include "tests/integration/deploy/manifest_command.h"

#include <regex>

namespace moemesh::integration {

using nlohmann::json;

std::vector<std::string> ManifestCommand(const json& summary, const std::string& kind,
                                         const std::string& name, const std::string& container,
                                         const std::map<std::string, std::string>& pod_variables,
                                         const std::map<std::string, std::string>& overrides,
                                         std::string* error) {
  std::map<std::string, std::string> variables = pod_variables;
  for (const json& object : summary["objects"]) {
    if (object["kind"] == "ConfigMap" &&
        object["name"].get<std::string>().rfind("moemesh-serving", 0) == 0) {
      for (const auto& [key, value] : object["data"].items()) variables[key] = value;
    }
  }
  const json* spec = nullptr;
  for (const json& object : summary["objects"]) {
    if (object["kind"] != kind || object["name"] != name) continue;
    for (const json& candidate : object["containers"]) {
      if (candidate["name"] == container) spec = &candidate;
    }
  }
  if (spec == nullptr) {
    *error = kind + "/" + name + " has no container " + container;
    return {};
  }
  std::vector<std::string> argv;
  for (const json& word : (*spec)["command"]) argv.push_back(word);
  for (const json& word : (*spec)["args"]) argv.push_back(word);
  const std::regex reference(R"(\$\(([A-Za-z_][A-Za-z0-9_]*)\))");
  for (std::string& word : argv) {
    std::string out;
    auto begin = std::sregex_iterator(word.begin(), word.end(), reference);
    size_t last = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      const std::string variable = (*it)[1];
      if (variables.count(variable) == 0) {
        *error = "$(" + variable + ") of " + name + " is not defined";
        return {};
      }
      out += word.substr(last, it->position() - last) + variables[variable];
      last = it->position() + it->length();
    }
    word = out + word.substr(last);
  }
  std::map<std::string, std::string> pending = overrides;
  for (std::string& word : argv) {
    const std::string flag = word.substr(0, word.find('='));
    if (auto it = pending.find(flag); it != pending.end()) {
      word = flag + "=" + it->second;
      pending.erase(it);
    }
  }
  for (const auto& [flag, value] : pending) argv.push_back(flag + "=" + value);
  return argv;
}

}  // namespace moemesh::integration
