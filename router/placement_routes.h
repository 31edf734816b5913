// HTTP routes of the elastic expert pool (added to HttpServerOptions::routes):
//   POST /v1/placement/rebalance   re-plan now from the recent load; answers once committed:
//                                  {"version", "changed", "reason", "balancedness_before",
//                                   "balancedness_after", "plan_to_commit_seconds"}
//                                  (409 when the nodes cannot hold every expert, 503 before the
//                                  first placement, 504 when not committed in time;
//                                  OpenAI-style error bodies)
//   GET  /v1/placement             the committed placement, the target being prepared and every
//                                  expert node's state (loaded version, held experts, drain)
#pragma once

#include <vector>

#include "router/control_plane.h"
#include "router/http_types.h"

namespace moemesh::router {

// `control` is not owned and must outlive the server. The rebalance call blocks until the
// commit, so it runs off the I/O threads (RunBlocking).
std::vector<HttpRoute> PlacementRoutes(ControlPlane* control);

}  // namespace moemesh::router
