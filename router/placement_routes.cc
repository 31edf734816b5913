#include "router/placement_routes.h"

#include <string>

#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"

namespace moemesh::router {
namespace {

using nlohmann::json;

json ErrorBody(const std::string& message, const std::string& type, const std::string& code) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

json PlacementJson(const moemesh::v1::Placement& placement) {
  json experts = json::array();
  for (const auto& entry : placement.experts()) {
    experts.push_back({{"layer", entry.layer()},
                       {"expert", entry.expert()},
                       {"nodes", std::vector<std::string>(entry.node_ids().begin(),
                                                          entry.node_ids().end())}});
  }
  return {{"version", placement.version()}, {"experts", std::move(experts)}};
}

}  // namespace

std::vector<HttpRoute> PlacementRoutes(ControlPlane* control) {
  std::vector<HttpRoute> routes;
  routes.push_back({"POST", "/v1/placement/rebalance", [control](const HttpRequest& request) {
    double timeout_seconds = 300;
    if (std::optional<std::string> value = request.QueryParam("timeout_seconds");
        value && (!absl::SimpleAtod(*value, &timeout_seconds) || timeout_seconds <= 0)) {
      return MakeResponse(400, ErrorBody("timeout_seconds must be a positive number",
                                         "invalid_request_error", "invalid_value")
                                   .dump());
    }
    return RunBlocking([control, timeout_seconds] {
      absl::StatusOr<RebalanceResult> result = control->Rebalance(absl::Seconds(timeout_seconds));
      if (!result.ok()) {
        const bool before_first = control->CurrentPlacement().version() == 0;
        const int status =
            absl::IsDeadlineExceeded(result.status()) ? 504 : before_first ? 503 : 409;
        return MakeResponse(status,
                            ErrorBody(std::string(result.status().message()),
                                      status == 409 ? "invalid_request_error" : "server_error",
                                      status == 504   ? "timeout"
                                      : status == 503 ? "not_ready"
                                                      : "cannot_place")
                                .dump());
      }
      return MakeResponse(200, json{{"version", result->version},
                                    {"changed", result->changed},
                                    {"reason", result->reason},
                                    {"balancedness_before", result->balancedness_before},
                                    {"balancedness_after", result->balancedness_after},
                                    {"plan_to_commit_seconds", result->plan_to_commit_seconds}}
                                   .dump());
    });
  }});
  routes.push_back({"GET", "/v1/placement", [control](const HttpRequest&) {
    json body;
    body["committed"] = PlacementJson(control->CurrentPlacement());
    if (auto target = control->TargetPlacement()) {
      body["target"] = PlacementJson(*target);
    } else {
      body["target"] = nullptr;
    }
    const ControlPlaneCounters counters = control->counters();
    body["min_used_version"] = counters.min_used_version;
    body["expert_nodes"] = json::array();
    for (const ExpertNodeInfo& node : control->ExpertNodes()) {
      body["expert_nodes"].push_back({{"node", node.node_id},
                                      {"address", node.address},
                                      {"healthy", node.healthy},
                                      {"in_placement", node.in_placement},
                                      {"loaded_version", node.loaded_version},
                                      {"held_experts", node.held_experts},
                                      {"max_experts_per_layer", node.max_experts_per_layer},
                                      {"draining", node.draining},
                                      {"drain_state", node.drain_state},
                                      {"drain_message", node.drain_message}});
    }
    HttpResponse response = MakeResponse(200, body.dump());
    response.SetHeader("Cache-Control", "no-cache");
    return response;
  }});
  return routes;
}

}  // namespace moemesh::router
