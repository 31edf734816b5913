// Glue between the router's placement (moemesh.v1.Placement: node ids per (layer, expert)) and
// the planner (core/placement: node indices per expert, layers 0..L-1 in MoE-layer order).
#pragma once

#include <string>
#include <vector>

#include "core/placement/planner.h"
#include "moemesh/v1/control.pb.h"

namespace moemesh::router {

// The (layer, expert) -> node ids entries of `plan` over `node_ids` (planner node index -> id),
// for MoE layers `moe_layers` (plan layer i = moe_layers[i]); node ids of a replica list keep the
// planner's ascending index order.
std::vector<moemesh::v1::ExpertReplicas> PlanEntries(const placement::PlacementPlan& plan,
                                                     const std::vector<std::string>& node_ids,
                                                     const std::vector<int>& moe_layers);

// Predicted mean (over layers) balancedness of `placement`'s replicas under `load`
// ([moe layer index][expert]; empty = uniform): each replica serves an equal share of its
// expert's load (placement::LayerBalancedness).
double PredictedBalancedness(const moemesh::v1::Placement& placement,
                             const std::vector<std::vector<double>>& load,
                             const std::vector<int>& moe_layers, int num_experts);

// True when both give every (layer, expert) the same set of node ids.
bool SameAssignment(const moemesh::v1::Placement& a,
                    const std::vector<moemesh::v1::ExpertReplicas>& b);

}  // namespace moemesh::router
