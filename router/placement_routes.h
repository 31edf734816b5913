// HTTP routes of the elastic expert pool (installed through HttpServerOptions::install_routes):
//   POST /v1/placement/rebalance   re-plan now from the recent load; answers once committed:
//                                  {"version", "changed", "reason", "balancedness_before",
//                                   "balancedness_after", "plan_to_commit_seconds"}
//                                  (409 when the nodes cannot hold every expert, 503 before the
//                                  first placement, 504 when not committed in time;
//                                  OpenAI-style error bodies)
//   GET  /v1/placement             the committed placement, the target being prepared and every
//                                  expert node's state (loaded version, held experts, drain)
#pragma once

#include "router/control_plane.h"

namespace httplib {
class Server;
}

namespace moemesh::router {

// `control` is not owned and must outlive the server.
void InstallPlacementRoutes(httplib::Server& server, ControlPlane* control);

}  // namespace moemesh::router
