// DeepSeek's EPLB (expert-parallel load balancer), global policy, written from its published
// description (github.com/deepseek-ai/EPLB README, DeepSeek-V3 technical report): the baseline
// the placement planner is measured against. Not used by the serving system.
//
// replicate_experts: each of the `physical - experts` redundant replicas goes to the logical
// expert with the largest load / replica count. balanced_packing: physical experts sorted by
// load per replica, heaviest first, each onto the lightest pack (GPU / node) that still has
// fewer than physical / packs items. The global policy (used when the node count does not
// divide the expert groups) applies both over all experts at once. EPLB does not forbid two
// replicas of one expert on one pack.
#pragma once

#include <vector>

namespace moemesh::bench {

struct EplbLayer {
  std::vector<int> replica_count;  // per logical expert
  std::vector<double> pack_load;   // per pack: sum of its replicas' load / replica_count
};

// One layer. Requires physical >= load.size() and physical % packs == 0 (as EPLB does).
EplbLayer EplbGlobal(const std::vector<double>& load, int physical, int packs);

// max / mean of pack loads (1.0 for an all-zero layer).
double Imbalance(const std::vector<double>& pack_load);

}  // namespace moemesh::bench
