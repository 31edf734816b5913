#include "router/placement_routes.h"

#include <string>

#include "absl/strings/numbers.h"
#include "httplib.h"
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

void InstallPlacementRoutes(httplib::Server& server, ControlPlane* control) {
  server.Post("/v1/placement/rebalance", [control](const httplib::Request& request,
                                                   httplib::Response& res) {
    double timeout_seconds = 300;
    if (request.has_param("timeout_seconds") &&
        (!absl::SimpleAtod(request.get_param_value("timeout_seconds"), &timeout_seconds) ||
         timeout_seconds <= 0)) {
      res.status = 400;
      res.set_content(ErrorBody("timeout_seconds must be a positive number",
                                "invalid_request_error", "invalid_value")
                          .dump(),
                      "application/json");
      return;
    }
    absl::StatusOr<RebalanceResult> result = control->Rebalance(absl::Seconds(timeout_seconds));
    if (!result.ok()) {
      const bool before_first = control->CurrentPlacement().version() == 0;
      res.status = absl::IsDeadlineExceeded(result.status()) ? 504 : before_first ? 503 : 409;
      res.set_content(ErrorBody(std::string(result.status().message()),
                                res.status == 409 ? "invalid_request_error" : "server_error",
                                res.status == 504   ? "timeout"
                                : res.status == 503 ? "not_ready"
                                                    : "cannot_place")
                          .dump(),
                      "application/json");
      return;
    }
    res.set_content(json{{"version", result->version},
                         {"changed", result->changed},
                         {"reason", result->reason},
                         {"balancedness_before", result->balancedness_before},
                         {"balancedness_after", result->balancedness_after},
                         {"plan_to_commit_seconds", result->plan_to_commit_seconds}}
                        .dump(),
                    "application/json");
  });
  server.Get("/v1/placement", [control](const httplib::Request&, httplib::Response& res) {
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
    res.set_header("Cache-Control", "no-cache");
    res.set_content(body.dump(), "application/json");
  });
}

}  // namespace moemesh::router
