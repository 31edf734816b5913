#include "core/placement/load_json.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moemesh::placement {

absl::StatusOr<LayerLoads> ParseExpertLoadJson(const nlohmann::json& body,
                                               const std::string& field) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError("expert load: expected a JSON object (GET /v1/experts/load)");
  }
  auto layers = body.find("layers");
  if (layers == body.end() || !layers->is_array() || layers->empty()) {
    return absl::InvalidArgumentError("expert load: no \"layers\" array, or it is empty");
  }
  LayerLoads out;
  std::set<int> seen;
  for (size_t i = 0; i < layers->size(); ++i) {
    const nlohmann::json& entry = (*layers)[i];
    const std::string where = absl::StrCat("expert load: layers[", i, "]");
    if (!entry.is_object()) return absl::InvalidArgumentError(where + " is not an object");
    auto number = entry.find("layer");
    if (number == entry.end() || !number->is_number_integer() || number->get<int64_t>() < 0) {
      return absl::InvalidArgumentError(where + ": \"layer\" must be a non-negative integer");
    }
    const int layer = number->get<int>();
    if (!seen.insert(layer).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": layer ", layer, " appears twice"));
    }
    auto counts = entry.find(field);
    if (counts == entry.end() || !counts->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " (layer ", layer, "): no \"", field, "\" array"));
    }
    std::vector<double> load;
    load.reserve(counts->size());
    for (size_t e = 0; e < counts->size(); ++e) {
      const nlohmann::json& value = (*counts)[e];
      const double v = value.is_number() ? value.get<double>() : -1;
      if (!value.is_number() || !std::isfinite(v) || v < 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, " (layer ", layer, "): ", field,
                                                       "[", e, "] = ", value.dump(),
                                                       " is not a non-negative number"));
      }
      load.push_back(v);
    }
    if (load.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " (layer ", layer, "): \"", field, "\" is empty"));
    }
    if (i > 0 && static_cast<int>(load.size()) != out.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(where, " (layer ", layer, ") has ",
                                                     load.size(), " experts, layers[0] has ",
                                                     out.num_experts));
    }
    out.num_experts = static_cast<int>(load.size());
    out.layer_numbers.push_back(layer);
    out.load.push_back(std::move(load));
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<std::vector<std::string>>>> ParsePlacementJson(
    const nlohmann::json& experts, const LayerLoads& loads) {
  if (!experts.is_array()) {
    return absl::InvalidArgumentError("placement: \"experts\" is not an array");
  }
  std::map<int, size_t> layer_index;
  for (size_t i = 0; i < loads.layer_numbers.size(); ++i) layer_index[loads.layer_numbers[i]] = i;
  std::vector<std::vector<std::vector<std::string>>> previous(
      loads.layer_numbers.size(), std::vector<std::vector<std::string>>(loads.num_experts));
  std::set<std::pair<int, int>> seen;
  for (size_t i = 0; i < experts.size(); ++i) {
    const nlohmann::json& entry = experts[i];
    const std::string where = absl::StrCat("placement: experts[", i, "]");
    if (!entry.is_object() || !entry.contains("layer") || !entry["layer"].is_number_integer() ||
        !entry.contains("expert") || !entry["expert"].is_number_integer() ||
        !entry.contains("nodes") || !entry["nodes"].is_array()) {
      return absl::InvalidArgumentError(
          where + " needs integer \"layer\" and \"expert\" and a \"nodes\" array");
    }
    const int64_t layer = entry["layer"].get<int64_t>();
    const int64_t expert = entry["expert"].get<int64_t>();
    auto it = layer_index.find(static_cast<int>(layer));
    if (layer < 0 || layer > INT32_MAX || it == layer_index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": layer ", layer, " has no load entry"));
    }
    if (expert < 0 || expert >= loads.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expert ", expert,
                                                     " is out of range (", loads.num_experts,
                                                     " experts)"));
    }
    if (!seen.insert({static_cast<int>(layer), static_cast<int>(expert)}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": layer ", layer, " expert ", expert, " is listed twice"));
    }
    std::vector<std::string>& ids = previous[it->second][expert];
    for (const nlohmann::json& id : entry["nodes"]) {
      if (!id.is_string()) {
        return absl::InvalidArgumentError(where + ": node ids must be strings");
      }
      ids.push_back(id.get<std::string>());
    }
  }
  return previous;
}

nlohmann::ordered_json PlacementJson(const PlacementPlan& plan,
                                     const std::vector<int>& layer_numbers,
                                     const std::vector<PlannerNode>& nodes) {
  nlohmann::ordered_json experts = nlohmann::ordered_json::array();
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const std::vector<std::vector<int>>& replicas = plan.layers[l].replicas;
    for (size_t e = 0; e < replicas.size(); ++e) {
      nlohmann::ordered_json ids = nlohmann::ordered_json::array();
      for (int node : replicas[e]) ids.push_back(nodes[node].node_id);
      experts.push_back({{"layer", layer_numbers[l]}, {"expert", e}, {"nodes", std::move(ids)}});
    }
  }
  nlohmann::ordered_json out;
  out["experts"] = std::move(experts);
  return out;
}

}  // namespace moemesh::placement
