// The JSON both ends of `moemesh place` speak: the router's `GET /v1/experts/load` body in
// (router/expert_load.cc writes it), the placement `{"experts":[{"layer","expert","nodes"}]}`
// out (the shape of that body's `placement.experts`).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/placement/planner.h"
#include "nlohmann/json.hpp"

namespace moemesh::placement {

// Per MoE layer load as the planner takes it, with the model layer numbers beside it.
struct LayerLoads {
  std::vector<int> layer_numbers;          // model layer number of each entry of `load`
  std::vector<std::vector<double>> load;   // [layer][expert] rows
  int num_experts = 0;
};

// Reads `body["layers"][i]["layer"]` and the per-expert counts `body["layers"][i][field]`
// (`total`: rows since start; `recent`: rows in the load window). Errors (INVALID_ARGUMENT,
// naming the layer entry and what is wrong): not an object, no or empty `layers`, a missing or
// non-integer `layer`, a repeated layer number, a missing field, counts that are not
// non-negative finite numbers, layers with different expert counts.
absl::StatusOr<LayerLoads> ParseExpertLoadJson(const nlohmann::json& body,
                                               const std::string& field = "total");

// The placement `experts` array ([{"layer":L,"expert":E,"nodes":[node_id,...]},...], as in
// `body["placement"]["experts"]` of /v1/experts/load or the output of `moemesh place`) as
// PlannerInput::previous for `loads`: previous[i][e] = node ids of expert e of layer
// loads.layer_numbers[i] (empty where the array does not list it). Errors (INVALID_ARGUMENT):
// not an array, an entry without integer layer / expert or string nodes, a layer not in
// `loads`, an expert out of range, an expert listed twice.
absl::StatusOr<std::vector<std::vector<std::vector<std::string>>>> ParsePlacementJson(
    const nlohmann::json& experts, const LayerLoads& loads);

// {"experts":[{"layer":L,"expert":E,"nodes":[node_id,...]},...]}: every (layer, expert) of
// `plan` in layer then expert order, L from `layer_numbers`, node ids from `nodes` (indices of
// PlannerInput::nodes, as PlanPlacement returns them).
nlohmann::ordered_json PlacementJson(const PlacementPlan& plan,
                                     const std::vector<int>& layer_numbers,
                                     const std::vector<PlannerNode>& nodes);

}  // namespace moemesh::placement
