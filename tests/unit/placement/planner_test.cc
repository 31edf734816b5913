// The placement planner (core/placement/planner.h): constraints on random inputs, determinism,
// errors, balance against the modulo placement, failure redundancy, capacities, rounding of the
// redundant experts, and re-planning from a previous placement.
#include "core/placement/planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moemesh::placement {
namespace {

using ::testing::HasSubstr;

std::vector<PlannerNode> Nodes(int count, int max_experts_per_layer = 0) {
  std::vector<PlannerNode> nodes;
  for (int n = 0; n < count; ++n) {
    nodes.push_back(PlannerNode{"node-" + std::to_string(n), max_experts_per_layer});
  }
  return nodes;
}

// Zipf(s) loads over `experts` with the ranks shuffled by `seed` (hot experts differ per seed).
std::vector<double> ZipfLoad(int experts, double s, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::vector<int> rank(experts);
  std::iota(rank.begin(), rank.end(), 0);
  std::shuffle(rank.begin(), rank.end(), engine);
  std::vector<double> load(experts);
  for (int e = 0; e < experts; ++e) load[rank[e]] = std::round(1e5 * std::pow(e + 1.0, -s));
  return load;
}

std::vector<std::vector<int>> Modulo(int experts, int nodes) {
  std::vector<std::vector<int>> replicas(experts);
  for (int e = 0; e < experts; ++e) replicas[e] = {e % nodes};
  return replicas;
}

// Every structural promise of PlacementPlan for `input`.
void ExpectValidPlan(const PlannerInput& input, const PlacementPlan& plan) {
  const int nodes = static_cast<int>(input.nodes.size());
  const int experts = input.num_experts;
  ASSERT_EQ(plan.layers.size(), input.load.size());
  ASSERT_EQ(plan.node_slots.size(), static_cast<size_t>(nodes));
  EXPECT_EQ(plan.physical_experts, input.min_replicas * experts + plan.redundant_experts);
  EXPECT_GE(plan.redundant_experts, 0);
  EXPECT_LE(plan.redundant_experts, input.redundant_experts);
  EXPECT_EQ(std::accumulate(plan.node_slots.begin(), plan.node_slots.end(), 0),
            plan.physical_experts);
  // Equal slots, except nodes held lower by their capacity; a difference of one only when the
  // redundant experts could not be rounded down.
  int low = experts, high = 0;
  for (int n = 0; n < nodes; ++n) {
    const int limit = input.nodes[n].max_experts_per_layer;
    const int capacity = limit > 0 ? std::min(limit, experts) : experts;
    EXPECT_LE(plan.node_slots[n], capacity) << "node " << n;
    if (plan.node_slots[n] < capacity) {
      low = std::min(low, plan.node_slots[n]);
      high = std::max(high, plan.node_slots[n]);
    }
  }
  if (low <= high) {
    EXPECT_LE(high - low, 1);
    if (high > low) {
      EXPECT_EQ(plan.redundant_experts, input.redundant_experts);
    }
  }
  double sum = 0;
  int moved = 0;
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const LayerPlacement& layer = plan.layers[l];
    ASSERT_EQ(layer.replicas.size(), static_cast<size_t>(experts));
    std::vector<int> held(nodes, 0);
    for (int e = 0; e < experts; ++e) {
      const std::vector<int>& replicas = layer.replicas[e];
      EXPECT_GE(static_cast<int>(replicas.size()), std::max(1, input.min_replicas))
          << "layer " << l << " expert " << e;
      EXPECT_TRUE(std::is_sorted(replicas.begin(), replicas.end()));
      EXPECT_EQ(std::adjacent_find(replicas.begin(), replicas.end()), replicas.end())
          << "two replicas of expert " << e << " on one node";
      for (int node : replicas) {
        ASSERT_GE(node, 0);
        ASSERT_LT(node, nodes);
        ++held[node];
      }
    }
    EXPECT_EQ(held, plan.node_slots) << "layer " << l;
    EXPECT_NEAR(layer.balancedness, LayerBalancedness(layer.replicas, input.load[l], nodes),
                1e-12);
    EXPECT_GT(layer.balancedness, 0);
    EXPECT_LE(layer.balancedness, 1.0 + 1e-12);
    sum += layer.balancedness;
    moved += layer.moved_replicas;
  }
  EXPECT_EQ(plan.moved_replicas, moved);
  if (!plan.layers.empty()) {
    EXPECT_NEAR(plan.mean_balancedness, sum / plan.layers.size(), 1e-12);
  }
}

TEST(PlannerTest, RandomInputsMeetEveryConstraint) {
  std::mt19937_64 engine(20261201);
  int planned = 0, refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    PlannerInput input;
    input.num_experts = std::uniform_int_distribution<int>(1, 40)(engine);
    const int nodes = std::uniform_int_distribution<int>(1, 10)(engine);
    input.nodes = Nodes(nodes);
    for (PlannerNode& node : input.nodes) {
      if (engine() % 2 == 0) {
        node.max_experts_per_layer =
            std::uniform_int_distribution<int>(1, input.num_experts + 2)(engine);
      }
    }
    input.min_replicas = std::uniform_int_distribution<int>(1, 3)(engine);
    input.redundant_experts = std::uniform_int_distribution<int>(0, 2 * input.num_experts)(engine);
    const int layers = std::uniform_int_distribution<int>(0, 3)(engine);
    for (int l = 0; l < layers; ++l) {
      switch (engine() % 3) {
        case 0:
          input.load.push_back(ZipfLoad(input.num_experts, 0.5 + (engine() % 20) / 10.0,
                                        engine()));
          break;
        case 1:
          input.load.push_back(std::vector<double>(input.num_experts, 0.0));
          break;
        default: {
          std::vector<double> load(input.num_experts);
          for (double& v : load) v = static_cast<double>(engine() % 1000);
          input.load.push_back(load);
        }
      }
    }
    int64_t available = 0;
    for (const PlannerNode& node : input.nodes) {
      available += node.max_experts_per_layer > 0
                       ? std::min(node.max_experts_per_layer, input.num_experts)
                       : input.num_experts;
    }
    absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
    if (available < static_cast<int64_t>(input.min_replicas) * input.num_experts) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << trial;
      ++refused;
      continue;
    }
    ASSERT_TRUE(plan.ok()) << "trial " << trial << ": " << plan.status();
    ExpectValidPlan(input, *plan);
    ++planned;
  }
  // Both branches were exercised.
  EXPECT_GT(planned, 50);
  EXPECT_GT(refused, 5);
}

TEST(PlannerTest, SameInputGivesTheSamePlan) {
  PlannerInput input;
  input.num_experts = 64;
  input.nodes = Nodes(8);
  input.redundant_experts = 8;
  for (int l = 0; l < 4; ++l) input.load.push_back(ZipfLoad(64, 1.2, l));
  // Ties everywhere: equal loads.
  input.load.push_back(std::vector<double>(64, 7.0));
  absl::StatusOr<PlacementPlan> first = PlanPlacement(input);
  absl::StatusOr<PlacementPlan> second = PlanPlacement(input);
  ASSERT_TRUE(first.ok() && second.ok());
  for (size_t l = 0; l < first->layers.size(); ++l) {
    EXPECT_EQ(first->layers[l].replicas, second->layers[l].replicas) << "layer " << l;
    EXPECT_EQ(first->layers[l].balancedness, second->layers[l].balancedness);
  }
}

TEST(PlannerTest, BadInputIsInvalidArgument) {
  PlannerInput good;
  good.num_experts = 4;
  good.nodes = Nodes(2);
  good.load = {{1, 2, 3, 4}};
  ASSERT_TRUE(PlanPlacement(good).ok());
  auto code = [](const PlannerInput& input) { return PlanPlacement(input).status().code(); };
  PlannerInput input = good;
  input.nodes.clear();
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.num_experts = 0;
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.load = {{1, 2, 3}};
  EXPECT_THAT(PlanPlacement(input).status().message(), HasSubstr("3 loads, expected 4"));
  input = good;
  input.load = {{1, -2, 3, 4}};
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.load = {{1, std::nan(""), 3, 4}};
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.min_replicas = 0;
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.redundant_experts = -1;
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
  input = good;
  input.previous = {{{"node-0"}, {"node-1"}}};  // 2 experts, not 4
  EXPECT_EQ(code(input), absl::StatusCode::kInvalidArgument);
}

TEST(PlannerTest, TooLittleCapacityIsFailedPreconditionNamingBothNumbers) {
  PlannerInput input;
  input.num_experts = 16;
  input.nodes = Nodes(3, /*max_experts_per_layer=*/5);
  input.load = {std::vector<double>(16, 1.0)};
  absl::Status status = PlanPlacement(input).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("16 physical experts per layer needed"));
  EXPECT_THAT(status.message(), HasSubstr("can hold 15"));

  // Two replicas each need two nodes.
  input.nodes = Nodes(1);
  input.min_replicas = 2;
  status = PlanPlacement(input).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("needs 2 expert nodes"));
}

TEST(PlannerTest, SkewedLoadIsFarBetterBalancedThanModulo) {
  for (int nodes : {4, 8, 16}) {
    PlannerInput input;
    input.num_experts = 128;
    input.nodes = Nodes(nodes);
    input.redundant_experts = nodes;
    for (int l = 0; l < 6; ++l) input.load.push_back(ZipfLoad(128, 0.6 + 0.16 * l, 100 + l));
    absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectValidPlan(input, *plan);
    for (size_t l = 0; l < input.load.size(); ++l) {
      const double modulo = LayerBalancedness(Modulo(128, nodes), input.load[l], nodes);
      EXPECT_GT(plan->layers[l].balancedness, modulo) << nodes << " nodes, layer " << l;
      // With one redundant expert per node, Zipf loads up to s = 1.4 balance almost perfectly.
      EXPECT_GT(plan->layers[l].balancedness, 0.97) << nodes << " nodes, layer " << l;
    }
    // Without redundant experts the planner still packs better than modulo.
    input.redundant_experts = 0;
    plan = PlanPlacement(input);
    ASSERT_TRUE(plan.ok());
    for (size_t l = 0; l < input.load.size(); ++l) {
      EXPECT_GE(plan->layers[l].balancedness,
                LayerBalancedness(Modulo(128, nodes), input.load[l], nodes) - 1e-12);
    }
  }
}

TEST(PlannerTest, HotExpertGetsTheRedundantReplicas) {
  PlannerInput input;
  input.num_experts = 16;
  input.nodes = Nodes(4);
  input.redundant_experts = 4;
  std::vector<double> load(16, 10.0);
  load[5] = 400;  // as much as 40 other experts
  input.load = {load};
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok());
  ExpectValidPlan(input, *plan);
  EXPECT_EQ(plan->layers[0].replicas[5], (std::vector<int>{0, 1, 2, 3}));  // on every node
  for (int e = 0; e < 16; ++e) {
    if (e != 5) {
      EXPECT_LE(plan->layers[0].replicas[e].size(), 2u) << e;
    }
  }
}

TEST(PlannerTest, MinReplicasTwoSurvivesLosingAnyNode) {
  PlannerInput input;
  input.num_experts = 32;
  input.nodes = Nodes(5);
  input.min_replicas = 2;
  input.redundant_experts = 6;
  for (int l = 0; l < 3; ++l) input.load.push_back(ZipfLoad(32, 1.5, l));
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectValidPlan(input, *plan);
  EXPECT_EQ(plan->physical_experts, 2 * 32 + plan->redundant_experts);
  for (int lost = 0; lost < 5; ++lost) {
    for (const LayerPlacement& layer : plan->layers) {
      for (int e = 0; e < 32; ++e) {
        const std::vector<int>& nodes = layer.replicas[e];
        EXPECT_TRUE(std::any_of(nodes.begin(), nodes.end(), [&](int n) { return n != lost; }))
            << "expert " << e << " only on node " << lost;
      }
    }
  }
}

TEST(PlannerTest, CapacityOfASmallNodeIsRespectedAndTheRestShareEvenly) {
  PlannerInput input;
  input.num_experts = 32;
  input.nodes = Nodes(4);
  input.nodes[1].max_experts_per_layer = 3;
  input.redundant_experts = 4;
  input.load = {ZipfLoad(32, 1.0, 7), ZipfLoad(32, 1.3, 8)};
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectValidPlan(input, *plan);
  // 36 physical experts: 3 on the small node, 11 on each other one.
  EXPECT_EQ(plan->node_slots, (std::vector<int>{11, 3, 11, 11}));
  EXPECT_EQ(plan->redundant_experts, 4);
}

TEST(PlannerTest, NodesFilledToCapacityForceTheReplicaCountsAndStillPack) {
  // 24 slots (7, 7, 3, 7) for 7 experts: nodes 0, 1 and 3 must each hold all 7, so every
  // expert has 3 or 4 replicas however hot it is (greedy counts by load alone do not pack).
  PlannerInput input;
  input.num_experts = 7;
  input.nodes = Nodes(4);
  input.nodes[2].max_experts_per_layer = 3;
  input.min_replicas = 2;
  input.redundant_experts = 14;
  input.load = {{9000, 5000, 10, 3, 1, 1, 0}, {1, 1, 1, 1, 1, 1, 1}};
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectValidPlan(input, *plan);
  EXPECT_EQ(plan->node_slots, (std::vector<int>{7, 7, 3, 7}));
  for (int e = 0; e < 7; ++e) {
    const size_t count = plan->layers[0].replicas[e].size();
    EXPECT_TRUE(count == 3 || count == 4) << "expert " << e << ": " << count;
  }
  // The node with room for 3 takes the 3 hottest.
  for (int e : {0, 1, 2}) EXPECT_EQ(plan->layers[0].replicas[e].size(), 4u) << e;
}

TEST(PlannerTest, RedundantExpertsAreRoundedDownToEqualSlots) {
  PlannerInput input;
  input.num_experts = 16;
  input.nodes = Nodes(3);
  input.load = {ZipfLoad(16, 1.0, 1)};
  input.redundant_experts = 4;  // 20 physical -> 18 = 3 x 6
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->redundant_experts, 2);
  EXPECT_EQ(plan->node_slots, (std::vector<int>{6, 6, 6}));
  // 17 cannot round down to 15 (fewer than one per expert): slots differ by one.
  input.redundant_experts = 1;
  plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->redundant_experts, 1);
  EXPECT_EQ(plan->node_slots, (std::vector<int>{6, 6, 5}));
  ExpectValidPlan(input, *plan);
}

TEST(PlannerTest, AllZeroLoadIsPlannedAsUniform) {
  PlannerInput input;
  input.num_experts = 20;
  input.nodes = Nodes(4);
  input.redundant_experts = 4;
  input.load = {std::vector<double>(20, 0.0)};
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  ASSERT_TRUE(plan.ok());
  ExpectValidPlan(input, *plan);
  EXPECT_EQ(plan->node_slots, (std::vector<int>{6, 6, 6, 6}));
  EXPECT_EQ(plan->layers[0].balancedness, 1.0);
  for (const std::vector<int>& nodes : plan->layers[0].replicas) {
    EXPECT_GE(nodes.size(), 1u);
    EXPECT_LE(nodes.size(), 2u);  // the 4 extra replicas go to 4 different experts
  }
}

std::vector<std::vector<std::vector<std::string>>> ById(const PlacementPlan& plan,
                                                        const std::vector<PlannerNode>& nodes) {
  std::vector<std::vector<std::vector<std::string>>> out;
  for (const LayerPlacement& layer : plan.layers) {
    std::vector<std::vector<std::string>> experts;
    for (const std::vector<int>& replicas : layer.replicas) {
      std::vector<std::string> ids;
      for (int n : replicas) ids.push_back(nodes[n].node_id);
      experts.push_back(std::move(ids));
    }
    out.push_back(std::move(experts));
  }
  return out;
}

TEST(PlannerTest, ReplanWithTheSameLoadAndPreviousMovesNothing) {
  PlannerInput input;
  input.num_experts = 64;
  input.nodes = Nodes(8);
  input.redundant_experts = 8;
  for (int l = 0; l < 3; ++l) input.load.push_back(ZipfLoad(64, 1.1, 40 + l));
  absl::StatusOr<PlacementPlan> first = PlanPlacement(input);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->moved_replicas, first->physical_experts * 3);  // no previous: all new
  // The previous placement given with node ids in another order of `nodes`.
  input.previous = ById(*first, input.nodes);
  std::reverse(input.nodes.begin(), input.nodes.end());
  absl::StatusOr<PlacementPlan> again = PlanPlacement(input);
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectValidPlan(input, *again);
  EXPECT_EQ(again->moved_replicas, 0);
  EXPECT_GE(again->mean_balancedness, first->mean_balancedness - 1e-12);
}

TEST(PlannerTest, ReplanAfterANodeLeavesMovesOnlyWhatItHeldAndABitMore) {
  PlannerInput input;
  input.num_experts = 64;
  input.nodes = Nodes(8);
  input.redundant_experts = 0;
  for (int l = 0; l < 3; ++l) input.load.push_back(ZipfLoad(64, 0.9, 60 + l));
  absl::StatusOr<PlacementPlan> first = PlanPlacement(input);
  ASSERT_TRUE(first.ok());
  input.previous = ById(*first, input.nodes);
  input.nodes.erase(input.nodes.begin() + 3);  // node-3 drains
  input.keep_tolerance = 0.02;
  absl::StatusOr<PlacementPlan> next = PlanPlacement(input);
  ASSERT_TRUE(next.ok()) << next.status();
  ExpectValidPlan(input, *next);
  // node-3 held 8 experts per layer: at least those move; a fresh plan would move most of 192.
  EXPECT_GE(next->moved_replicas, 3 * 8);
  EXPECT_LE(next->moved_replicas, 3 * 8 * 3);
  // Planning from scratch for the 7 nodes gives about the same balance.
  PlannerInput scratch = input;
  scratch.previous.clear();
  absl::StatusOr<PlacementPlan> fresh = PlanPlacement(scratch);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GE(next->mean_balancedness, fresh->mean_balancedness - 0.02 - 1e-9);
}

TEST(PlannerTest, HugeLoadsPlanLikeTheirScaledDownCopies) {
  PlannerInput input;
  input.num_experts = 32;
  input.nodes = Nodes(4);
  input.redundant_experts = 4;
  input.load = {ZipfLoad(32, 1.2, 5)};
  PlannerInput huge = input;
  for (double& v : huge.load[0]) v *= 0x1p1006;  // each finite, their sum is not
  absl::StatusOr<PlacementPlan> plan = PlanPlacement(input);
  absl::StatusOr<PlacementPlan> huge_plan = PlanPlacement(huge);
  ASSERT_TRUE(plan.ok() && huge_plan.ok());
  EXPECT_EQ(huge_plan->layers[0].replicas, plan->layers[0].replicas);
  EXPECT_EQ(huge_plan->layers[0].balancedness, plan->layers[0].balancedness);
  EXPECT_GT(huge_plan->layers[0].balancedness, 0.9);
}

TEST(PlannerTest, NodeLoadsSplitEachExpertEvenlyOverItsReplicas) {
  const std::vector<std::vector<int>> replicas = {{0, 1}, {1}, {0, 2}};
  const std::vector<double> load = {10, 3, 4};
  EXPECT_EQ(NodeLoads(replicas, load, 3), (std::vector<double>{7, 8, 2}));
  EXPECT_DOUBLE_EQ(LayerBalancedness(replicas, load, 3), (17.0 / 3) / 8);
}

}  // namespace
}  // namespace moemesh::placement
