// The router's elastic expert pool without processes: the control plane's reconcile loop driven
// by direct Register/Heartbeat calls. A timer re-plan on skewed load becomes a target that is
// committed only once every node of it reports it loaded; a drain the others cannot absorb is
// refused, goes through once a node joins, and completes only after the attention node stopped
// using the old placement.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "router/control_plane.h"

namespace moemesh::router {
namespace {

using moemesh::v1::HeartbeatReply;

checkpoint::ModelConfig TinyConfig() {
  checkpoint::ModelConfig config;
  config.num_hidden_layers = 4;  // layer 0 dense, MoE layers 1..3 (as the tiny-r1 fixture)
  config.first_k_dense_replace = 1;
  config.n_routed_experts = 16;
  config.hidden_size = 64;
  return config;
}

std::string Register(ControlPlane& plane, moemesh::v1::NodeKind kind, const std::string& name,
                     int capacity = 0) {
  moemesh::v1::RegisterRequest request;
  request.set_kind(kind);
  request.set_address(name + ":1");
  request.set_preferred_id(name);
  request.set_max_experts_per_layer(static_cast<uint32_t>(capacity));
  moemesh::v1::RegisterReply reply;
  EXPECT_TRUE(plane.Register(nullptr, &request, &reply).ok());
  return reply.node_id();
}

HeartbeatReply Beat(ControlPlane& plane, const std::string& id, uint64_t loaded,
                    bool draining = false) {
  moemesh::v1::HeartbeatRequest request;
  request.set_node_id(id);
  request.set_loaded_placement_version(loaded);
  request.set_draining(draining);
  HeartbeatReply reply;
  EXPECT_TRUE(plane.Heartbeat(nullptr, &request, &reply).ok());
  return reply;
}

void BeatAttention(ControlPlane& plane, const std::string& id, uint64_t used) {
  moemesh::v1::HeartbeatRequest request;
  request.set_node_id(id);
  request.set_used_placement_version(used);
  HeartbeatReply reply;
  EXPECT_TRUE(plane.Heartbeat(nullptr, &request, &reply).ok());
}

// Polls `done` every 10 ms for up to 5 s.
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 500; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

bool Holds(const moemesh::v1::Placement& placement, const std::string& id) {
  for (const auto& entry : placement.experts()) {
    for (const auto& node : entry.node_ids()) {
      if (node == id) return true;
    }
  }
  return false;
}

TEST(ControlPlaneElastic, TimerReplanOnSkewedLoadIsCommittedOnlyOnceEveryNodeLoadedIt) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 2;
  options.expected_attention_nodes = 0;
  options.redundant_experts = 2;
  options.rebalance_interval_seconds = 0.05;
  options.rebalance_min_gain = 0.01;
  options.reconcile_interval = absl::Milliseconds(10);
  // Expert 5 of every layer carries most of the load.
  options.load_window = [] {
    std::vector<std::vector<double>> load(3, std::vector<double>(16, 10.0));
    for (auto& layer : load) layer[5] = 1000.0;
    return load;
  };
  ControlPlane plane(TinyConfig(), options);
  const std::string a = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "ex-a");
  const std::string b = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "ex-b");
  const uint64_t first = plane.CurrentPlacement().version();
  ASSERT_GT(first, 0u);
  Beat(plane, a, first);
  Beat(plane, b, first);
  std::optional<moemesh::v1::Placement> target;
  ASSERT_TRUE(Eventually([&] { return (target = plane.TargetPlacement()).has_value(); }));
  EXPECT_TRUE(target->target());
  EXPECT_GT(target->version(), plane.CurrentPlacement().version());
  // The hot expert is replicated on both nodes in every layer.
  for (const auto& entry : target->experts()) {
    if (entry.expert() == 5) EXPECT_EQ(entry.node_ids_size(), 2) << entry.layer();
  }
  // Only one node loaded it: not committed.
  EXPECT_EQ(Beat(plane, a, target->version()).target_placement_version(), target->version());
  Beat(plane, b, first);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_LT(plane.CurrentPlacement().version(), target->version());
  // Both: committed, and the version attention nodes see is the target's.
  Beat(plane, b, target->version());
  ASSERT_TRUE(Eventually([&] { return plane.CurrentPlacement().version() == target->version(); }));
  EXPECT_FALSE(plane.CurrentPlacement().target());
  const ControlPlaneCounters counters = plane.counters();
  EXPECT_EQ(counters.rebalances.at("timer"), 1u);
  EXPECT_LT(counters.last_balancedness_before, counters.last_balancedness_after);
  // The same load again gains nothing: no new target.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(plane.TargetPlacement().has_value());
  EXPECT_EQ(plane.counters().rebalances.at("timer"), 1u);
  std::string why;
  EXPECT_TRUE(plane.Ready(&why)) << why;
}

TEST(ControlPlaneElastic, DrainRefusedThenDoneAfterAJoinAndAfterTheAttentionNodeSwitched) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 2;
  options.expected_attention_nodes = 1;
  options.reconcile_interval = absl::Milliseconds(10);
  ControlPlane plane(TinyConfig(), options);
  const std::string attention = Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "att");
  const std::string a = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "ex-a", 8);
  const std::string b = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "ex-b", 8);
  const uint64_t first = plane.CurrentPlacement().version();
  ASSERT_GT(first, 0u);
  Beat(plane, a, first);
  Beat(plane, b, first);
  BeatAttention(plane, attention, first);
  // 16 experts, capacity 8 each: ex-b cannot leave.
  Beat(plane, b, first, /*draining=*/true);
  ASSERT_TRUE(Eventually([&] {
    return Beat(plane, b, first, true).drain() == HeartbeatReply::DRAIN_REFUSED;
  }));
  EXPECT_NE(Beat(plane, b, first, true).drain_message().find("cannot hold"), std::string::npos);
  EXPECT_EQ(plane.counters().drains_refused, 1u);
  EXPECT_TRUE(Holds(plane.CurrentPlacement(), b));
  // A third node joins: the re-plan leaves ex-b out.
  const std::string c = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "ex-c", 8);
  std::optional<moemesh::v1::Placement> target;
  ASSERT_TRUE(Eventually([&] {
    Beat(plane, b, first, true);
    return (target = plane.TargetPlacement()).has_value();
  }));
  EXPECT_FALSE(Holds(*target, b));
  EXPECT_TRUE(Holds(*target, c));
  Beat(plane, a, target->version());
  Beat(plane, c, target->version());
  ASSERT_TRUE(Eventually([&] { return plane.CurrentPlacement().version() >= target->version(); }));
  EXPECT_FALSE(Holds(plane.CurrentPlacement(), b));
  // The attention node still uses the old version: ex-b must keep serving.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  HeartbeatReply reply = Beat(plane, b, first, true);
  EXPECT_EQ(reply.drain(), HeartbeatReply::DRAIN_IN_PROGRESS);
  EXPECT_EQ(reply.min_used_placement_version(), first);
  BeatAttention(plane, attention, plane.CurrentPlacement().version());
  reply = Beat(plane, b, first, true);
  EXPECT_EQ(reply.drain(), HeartbeatReply::DRAINED) << reply.drain_message();
  EXPECT_EQ(plane.counters().drains_completed, 1u);
  EXPECT_EQ(plane.counters().rebalances.at("join"), 1u);
}

}  // namespace
}  // namespace moemesh::router
