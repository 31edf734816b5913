// The router's control plane: registry, static placement, heartbeat health, version bumps,
// re-registration, readiness, attention-node choice; and ControlClient against it over gRPC.
#include <thread>

#include "core/comm/control_client.h"
#include "core/comm/grpc_server.h"
#include "gtest/gtest.h"
#include "router/control_plane.h"
#include "tests/unit/comm/grpc_test_util.h"

namespace moemesh::router {
namespace {

using moemesh::v1::HeartbeatReply;
using moemesh::v1::HeartbeatRequest;
using moemesh::v1::RegisterReply;
using moemesh::v1::RegisterRequest;

checkpoint::ModelConfig TinyConfig() {
  checkpoint::ModelConfig config;
  config.num_hidden_layers = 4;  // layer 0 dense, MoE layers 1..3 (as the tiny-r1 fixture)
  config.first_k_dense_replace = 1;
  config.n_routed_experts = 16;
  config.hidden_size = 64;
  return config;
}

std::string Register(ControlPlane& plane, moemesh::v1::NodeKind kind, const std::string& address,
                     const std::string& preferred = "", uint64_t cache = 0) {
  RegisterRequest request;
  request.set_kind(kind);
  request.set_address(address);
  request.set_preferred_id(preferred);
  request.set_cache_capacity_tokens(cache);
  RegisterReply reply;
  EXPECT_TRUE(plane.Register(nullptr, &request, &reply).ok());
  return reply.node_id();
}

HeartbeatReply Beat(ControlPlane& plane, const std::string& id, uint64_t loaded,
                    uint64_t cache_free = 0) {
  HeartbeatRequest request;
  request.set_node_id(id);
  request.set_loaded_placement_version(loaded);
  request.set_cache_free_tokens(cache_free);
  HeartbeatReply reply;
  EXPECT_TRUE(plane.Heartbeat(nullptr, &request, &reply).ok());
  return reply;
}

// Heartbeats every expert node with the current version until the version stops moving.
uint64_t Settle(ControlPlane& plane, const std::vector<std::string>& ids) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t version = plane.CurrentPlacement().version();
    for (const auto& id : ids) Beat(plane, id, version);
    if (plane.CurrentPlacement().version() == version) return version;
  }
  return 0;
}

const moemesh::v1::ExpertNode* NodeIn(const moemesh::v1::Placement& placement,
                                      const std::string& id) {
  for (const auto& node : placement.nodes()) {
    if (node.node_id() == id) return &node;
  }
  return nullptr;
}

TEST(ControlPlane, StaticPlacementOnceExpectedExpertNodesRegistered) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 2;
  options.expected_attention_nodes = 0;
  ControlPlane plane(TinyConfig(), options);
  const std::string a = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:1");
  EXPECT_EQ(a, "expert-0");
  EXPECT_EQ(plane.CurrentPlacement().version(), 0u);
  std::string why;
  EXPECT_FALSE(plane.Ready(&why));
  EXPECT_NE(why.find("1 of 2 expert nodes"), std::string::npos) << why;
  EXPECT_EQ(plane.FirstUnservedExpert(), std::make_pair(1, 0));

  const std::string b = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:2", "pod-b");
  EXPECT_EQ(b, "pod-b");
  moemesh::v1::Placement placement = plane.CurrentPlacement();
  EXPECT_EQ(placement.version(), 1u);
  ASSERT_EQ(placement.experts_size(), 3 * 16);
  for (const auto& replicas : placement.experts()) {
    EXPECT_GE(replicas.layer(), 1u);
    ASSERT_EQ(replicas.node_ids_size(), 1);
    EXPECT_EQ(replicas.node_ids(0), replicas.expert() % 2 == 0 ? a : b);
  }
  // Not loaded yet: not ready, and the first expert without a healthy holder is named.
  EXPECT_FALSE(plane.Ready(&why));
  EXPECT_NE(why.find("layer 1 expert 0"), std::string::npos) << why;
  const uint64_t settled = Settle(plane, {a, b});
  EXPECT_GT(settled, 1u);
  EXPECT_TRUE(plane.Ready(&why)) << why;
  EXPECT_EQ(plane.FirstUnservedExpert(), std::nullopt);
  placement = plane.CurrentPlacement();
  for (const auto& node : placement.nodes()) EXPECT_TRUE(node.healthy());
}

TEST(ControlPlane, HeartbeatTimeoutMarksUnhealthyAndReRegistrationGivesExpertsBack) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 2;
  options.expected_attention_nodes = 0;
  options.heartbeat_timeout = absl::Milliseconds(150);
  ControlPlane plane(TinyConfig(), options);
  const std::string a = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:1", "ex-a");
  const std::string b = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:2", "ex-b");
  const uint64_t settled = Settle(plane, {a, b});
  ASSERT_TRUE(plane.Ready(nullptr));

  // b goes silent; a keeps beating.
  for (int i = 0; i < 6; ++i) {
    Beat(plane, a, plane.CurrentPlacement().version());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  moemesh::v1::Placement placement = plane.CurrentPlacement();
  EXPECT_GT(placement.version(), settled);
  ASSERT_NE(NodeIn(placement, b), nullptr);
  EXPECT_FALSE(NodeIn(placement, b)->healthy());
  EXPECT_TRUE(NodeIn(placement, a)->healthy());
  EXPECT_EQ(plane.FirstUnservedExpert(), std::make_pair(1, 1));
  std::string why;
  EXPECT_FALSE(plane.Ready(&why));
  EXPECT_NE(why.find("layer 1 expert 1"), std::string::npos) << why;
  EXPECT_NE(why.find("no heartbeat"), std::string::npos) << why;

  // b restarts on another port with the same name: same id, same experts, healthy once it has
  // loaded the version that gave them back.
  const uint64_t before = plane.CurrentPlacement().version();
  EXPECT_EQ(Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:3", "ex-b"), b);
  placement = plane.CurrentPlacement();
  EXPECT_GT(placement.version(), before);
  EXPECT_EQ(NodeIn(placement, b)->address(), "h:3");
  EXPECT_FALSE(NodeIn(placement, b)->healthy());
  for (const auto& replicas : placement.experts()) {
    EXPECT_EQ(replicas.node_ids(0), replicas.expert() % 2 == 0 ? a : b);
  }
  Beat(plane, b, 0);  // still loading
  EXPECT_FALSE(NodeIn(plane.CurrentPlacement(), b)->healthy());
  const uint64_t reassigned = plane.CurrentPlacement().version();
  Beat(plane, b, reassigned);
  placement = plane.CurrentPlacement();
  EXPECT_TRUE(NodeIn(placement, b)->healthy());
  EXPECT_EQ(placement.version(), reassigned + 1);  // health changed: bump
  Settle(plane, {a, b});
  EXPECT_TRUE(plane.Ready(&why)) << why;
}

// An expert node registering with a restarted router: what it reports holding from before.
std::string RegisterHolding(ControlPlane& plane, const std::string& name, uint64_t version,
                            const std::vector<std::pair<int, int>>& held) {
  RegisterRequest request;
  request.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  request.set_address("h:" + name);
  request.set_preferred_id(name);
  request.set_placement_version(version);
  for (const auto& [layer, expert] : held) {
    if (request.held_experts_size() == 0 ||
        request.held_experts(request.held_experts_size() - 1).layer() !=
            static_cast<uint32_t>(layer)) {
      request.add_held_experts()->set_layer(layer);
    }
    request.mutable_held_experts(request.held_experts_size() - 1)->add_experts(expert);
  }
  RegisterReply reply;
  EXPECT_TRUE(plane.Register(nullptr, &request, &reply).ok());
  return reply.node_id();
}

TEST(ControlPlane, RestartedRouterAdoptsWhatTheNodesHold) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 2;
  options.expected_attention_nodes = 0;
  ControlPlane plane(TinyConfig(), options);
  std::vector<std::pair<int, int>> even, odd;
  for (int layer = 1; layer <= 3; ++layer) {
    for (int expert = 0; expert < 16; ++expert) {
      (expert % 2 == 0 ? even : odd).emplace_back(layer, expert);
    }
  }
  even.emplace_back(0, 1);  // a dense layer: not an expert, ignored
  const std::string a = RegisterHolding(plane, "ex-a", 7, even);
  EXPECT_EQ(plane.CurrentPlacement().version(), 0u) << "odd experts are not held by anyone yet";
  const std::string b = RegisterHolding(plane, "ex-b", 7, odd);
  moemesh::v1::Placement placement = plane.CurrentPlacement();
  EXPECT_GT(placement.version(), 7u) << "versions go above the previous router's";
  ASSERT_EQ(placement.experts_size(), 48);
  for (const auto& replicas : placement.experts()) {
    ASSERT_EQ(replicas.node_ids_size(), 1);
    EXPECT_EQ(replicas.node_ids(0), replicas.expert() % 2 == 0 ? a : b);
  }
  // Serving at once (they hold their share), and still after heartbeats of the old version.
  EXPECT_TRUE(NodeIn(placement, a)->healthy());
  EXPECT_TRUE(NodeIn(placement, b)->healthy());
  const uint64_t adopted = placement.version();
  Beat(plane, a, 7);
  Beat(plane, b, 7);
  EXPECT_EQ(plane.CurrentPlacement().version(), adopted);
  EXPECT_EQ(plane.FirstUnservedExpert(), std::nullopt);
  EXPECT_EQ(plane.counters().adopted_replicas, 48u);
  EXPECT_EQ(plane.counters().placements_adopted, 1u);

  // A node registering later with experts becomes a replica of exactly those.
  const std::string c = RegisterHolding(plane, "ex-c", 7, {{1, 0}, {1, 3}});
  placement = plane.CurrentPlacement();
  EXPECT_GT(placement.version(), adopted);
  for (const auto& replicas : placement.experts()) {
    const bool held = replicas.layer() == 1 && (replicas.expert() == 0 || replicas.expert() == 3);
    EXPECT_EQ(replicas.node_ids_size(), held ? 2 : 1);
    if (held) {
      EXPECT_EQ(replicas.node_ids(1), c);
    }
  }
  EXPECT_TRUE(NodeIn(placement, c)->healthy());
  EXPECT_EQ(plane.counters().adopted_replicas, 50u);

  // The nodes take our versions as newer: the new placement the nodes get is numbered above any
  // version a node reports (here an attention node that dispatched with version 100).
  RegisterRequest attention;
  attention.set_kind(moemesh::v1::NODE_KIND_ATTENTION);
  attention.set_address("h:att");
  attention.set_placement_version(100);
  RegisterReply reply;
  ASSERT_TRUE(plane.Register(nullptr, &attention, &reply).ok());
  EXPECT_GT(plane.CurrentPlacement().version(), 100u);
  EXPECT_EQ(plane.CurrentPlacement().experts_size(), 48);
}

TEST(ControlPlane, AdoptionWaitsForTheExpectedExpertNodesAtMostAHeartbeatTimeout) {
  std::vector<std::pair<int, int>> even, odd;
  for (int layer = 1; layer <= 3; ++layer) {
    for (int expert = 0; expert < 16; ++expert) {
      (expert % 2 == 0 ? even : odd).emplace_back(layer, expert);
    }
  }
  ControlPlaneOptions options;
  options.expected_expert_nodes = 3;
  options.expected_attention_nodes = 0;
  options.heartbeat_timeout = absl::Milliseconds(300);
  options.reconcile_interval = absl::Milliseconds(20);
  {
    // The third node comes back in time: one adopted placement with all three.
    ControlPlane plane(TinyConfig(), options);
    RegisterHolding(plane, "ex-a", 5, even);
    RegisterHolding(plane, "ex-b", 5, odd);
    EXPECT_EQ(plane.CurrentPlacement().version(), 0u) << "ex-c may still come back";
    const std::string c = RegisterHolding(plane, "ex-c", 5, {{2, 7}});
    const moemesh::v1::Placement placement = plane.CurrentPlacement();
    EXPECT_EQ(placement.version(), 6u);
    EXPECT_EQ(placement.nodes_size(), 3);
    EXPECT_EQ(plane.counters().adopted_replicas, 49u);
  }
  {
    // It does not: adopted from the two a heartbeat timeout after the first report.
    ControlPlane plane(TinyConfig(), options);
    const std::string a = RegisterHolding(plane, "ex-a", 5, even);
    const std::string b = RegisterHolding(plane, "ex-b", 5, odd);
    for (int i = 0; i < 100 && plane.CurrentPlacement().version() == 0; ++i) {
      Beat(plane, a, 5);
      Beat(plane, b, 5);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(plane.CurrentPlacement().version(), 6u);
    EXPECT_EQ(plane.counters().placements_adopted, 1u);
    EXPECT_EQ(plane.counters().adopted_replicas, 48u);
  }
}

TEST(ControlPlane, AdoptedPlacementShortOfMinReplicasIsReplannedAfterAHeartbeatTimeout) {
  // Before the restart a third node held the second replicas; it does not come back.
  ControlPlaneOptions options;
  options.expected_attention_nodes = 0;
  options.min_replicas = 2;
  options.heartbeat_timeout = absl::Milliseconds(200);
  options.reconcile_interval = absl::Milliseconds(20);
  ControlPlane plane(TinyConfig(), options);
  std::vector<std::pair<int, int>> even, odd;
  for (int layer = 1; layer <= 3; ++layer) {
    for (int expert = 0; expert < 16; ++expert) {
      (expert % 2 == 0 ? even : odd).emplace_back(layer, expert);
    }
  }
  const std::string a = RegisterHolding(plane, "ex-a", 3, even);
  const std::string b = RegisterHolding(plane, "ex-b", 3, odd);
  ASSERT_GT(plane.CurrentPlacement().version(), 3u);
  EXPECT_FALSE(plane.TargetPlacement().has_value()) << "no re-plan before the grace period";
  std::optional<moemesh::v1::Placement> target;
  for (int i = 0; i < 100 && !target.has_value(); ++i) {
    Beat(plane, a, 3);
    Beat(plane, b, 3);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    target = plane.TargetPlacement();
  }
  ASSERT_TRUE(target.has_value()) << "no re-plan restored two replicas";
  for (const auto& replicas : target->experts()) EXPECT_EQ(replicas.node_ids_size(), 2);
}

TEST(ControlPlane, UnknownNodeIsToldToRegisterAgain) {
  ControlPlane plane(TinyConfig(), ControlPlaneOptions{});
  EXPECT_FALSE(Beat(plane, "expert-7", 0).known());
  RegisterRequest bad;
  RegisterReply reply;
  bad.set_address("h:1");
  EXPECT_EQ(plane.Register(nullptr, &bad, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:2", "same");
  bad.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  bad.set_preferred_id("same");
  EXPECT_EQ(plane.Register(nullptr, &bad, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(ControlPlane, ReadyNeedsAttentionNodesAndPickChoosesMostFreeCache) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 1;
  options.expected_attention_nodes = 2;
  options.heartbeat_timeout = absl::Milliseconds(150);
  ControlPlane plane(TinyConfig(), options);
  const std::string e = Register(plane, moemesh::v1::NODE_KIND_EXPERT, "h:1");
  Settle(plane, {e});
  std::string why;
  EXPECT_FALSE(plane.Ready(&why));
  EXPECT_NE(why.find("attention nodes: 0 healthy of 2"), std::string::npos) << why;
  EXPECT_EQ(plane.PickAttentionNode(), std::nullopt);

  const std::string x = Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:10", "", 1000);
  const std::string y = Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:11", "", 1000);
  EXPECT_EQ(x, "attention-0");
  EXPECT_EQ(y, "attention-1");
  EXPECT_TRUE(plane.Ready(&why)) << why;
  Beat(plane, x, 0, 300);
  Beat(plane, y, 0, 700);
  auto picked = plane.PickAttentionNode(/*reserve_tokens=*/500);
  ASSERT_TRUE(picked.has_value());
  EXPECT_EQ(picked->node_id, y);
  EXPECT_EQ(picked->address, "h:11");
  // y's estimate dropped to 200 by the reservation: x now has the most.
  EXPECT_EQ(plane.PickAttentionNode()->node_id, x);
  ASSERT_EQ(plane.AttentionNodes().size(), 2u);

  // x goes silent: only y is picked, and Ready says one is missing.
  for (int i = 0; i < 5; ++i) {
    Beat(plane, y, 0, 10);
    Beat(plane, e, plane.CurrentPlacement().version());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(plane.PickAttentionNode()->node_id, y);
  EXPECT_FALSE(plane.Ready(&why));
  EXPECT_NE(why.find("attention nodes: 1 healthy of 2"), std::string::npos) << why;
}

TEST(ControlPlane, PickSkipsDrainingAndAvoidedAttentionNodes) {
  ControlPlaneOptions options;
  options.expected_attention_nodes = 0;
  options.heartbeat_timeout = absl::Seconds(60);
  ControlPlane plane(TinyConfig(), options);
  const std::string x = Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:10", "", 1000);
  const std::string y = Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:11", "", 1000);
  Beat(plane, x, 0, 900);
  Beat(plane, y, 0, 100);
  EXPECT_EQ(plane.PickAttentionNode()->node_id, x);
  // A sequence that x just failed goes to y; with both avoided there is none.
  EXPECT_EQ(plane.PickAttentionNode(0, {"h:10"})->node_id, y);
  EXPECT_EQ(plane.PickAttentionNode(0, {"h:10", "h:11"}), std::nullopt);
  // x drains: never picked, although it has the most free cache; reported as draining.
  HeartbeatRequest draining;
  draining.set_node_id(x);
  draining.set_cache_free_tokens(900);
  draining.set_draining(true);
  HeartbeatReply reply;
  ASSERT_TRUE(plane.Heartbeat(nullptr, &draining, &reply).ok());
  EXPECT_EQ(plane.PickAttentionNode()->node_id, y);
  EXPECT_EQ(plane.PickAttentionNode(0, {"h:11"}), std::nullopt);
  EXPECT_TRUE(plane.AttentionNodes()[0].draining);
  EXPECT_FALSE(plane.AttentionNodes()[1].draining);
  // A restarted x (registers again) admits again.
  Register(plane, moemesh::v1::NODE_KIND_ATTENTION, "h:10", x, 1000);
  EXPECT_EQ(plane.PickAttentionNode()->node_id, x);
}

TEST(ControlClient, RegistersHeartbeatsAndFollowsPlacementOverGrpc) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 1;
  options.expected_attention_nodes = 0;
  options.heartbeat_interval_seconds = 0.02;
  options.heartbeat_timeout = absl::Milliseconds(500);
  ControlPlane plane(TinyConfig(), options);
  int port = 0;
  auto server = comm::StartGrpcServer("127.0.0.1:0", {&plane}, &port);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(moemesh::testing::HealthCheck("127.0.0.1:" + std::to_string(port)), 1);
  EXPECT_NE(moemesh::testing::ReflectionListServices("127.0.0.1:" + std::to_string(port))
                .find("moemesh.v1.ControlPlane"),
            std::string::npos);

  comm::ControlClientOptions client_options;
  client_options.router_address = "127.0.0.1:" + std::to_string(port);
  client_options.registration.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  client_options.registration.set_address("127.0.0.1:9");
  std::atomic<uint64_t> loaded{0};
  std::atomic<uint64_t> seen{0};
  auto client = comm::ControlClient::Start(
      client_options, [&](const moemesh::v1::Placement& p) { seen = p.version(); loaded = p.version(); },
      [&](HeartbeatRequest& request) { request.set_loaded_placement_version(loaded); });
  std::string why;
  for (int i = 0; i < 200 && !plane.Ready(&why); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(plane.Ready(&why)) << why;
  EXPECT_EQ(client->node_id(), "expert-0");
  EXPECT_GE(seen.load(), 1u);
  EXPECT_GE(client->placement().version(), 1u);
  auto refreshed = client->RefreshPlacement();
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->experts_size(), 48);
  client->Stop();
  comm::ShutdownGrpcServer(server.get(), 0);
}

TEST(ControlClient, SendHeartbeatAndWaitDeliversStateChangedJustBefore) {
  ControlPlaneOptions options;
  options.expected_expert_nodes = 0;
  options.expected_attention_nodes = 1;
  // Far longer than the test: only the heartbeat sent on request can carry the change.
  options.heartbeat_interval_seconds = 60;
  options.heartbeat_timeout = absl::Seconds(120);
  ControlPlane plane(TinyConfig(), options);
  int port = 0;
  auto server = comm::StartGrpcServer("127.0.0.1:0", {&plane}, &port);
  ASSERT_NE(server, nullptr);
  comm::ControlClientOptions client_options;
  client_options.router_address = "127.0.0.1:" + std::to_string(port);
  client_options.registration.set_kind(moemesh::v1::NODE_KIND_ATTENTION);
  client_options.registration.set_address("127.0.0.1:9");
  client_options.registration.set_cache_capacity_tokens(1000);
  std::atomic<bool> draining{false};
  auto client = comm::ControlClient::Start(
      client_options, [](const moemesh::v1::Placement&) {},
      [&](HeartbeatRequest& request) { request.set_draining(draining.load()); });
  // Registered and the first (not draining) heartbeat answered.
  ASSERT_TRUE(client->SendHeartbeatAndWait(absl::Seconds(10)));
  ASSERT_EQ(plane.AttentionNodes().size(), 1u);
  EXPECT_FALSE(plane.AttentionNodes()[0].draining);
  draining = true;
  ASSERT_TRUE(client->SendHeartbeatAndWait(absl::Seconds(10)));
  EXPECT_TRUE(plane.AttentionNodes()[0].draining);
  client->Stop();
  // A stopped client answers false at once instead of waiting.
  EXPECT_FALSE(client->SendHeartbeatAndWait(absl::Seconds(10)));
  comm::ShutdownGrpcServer(server.get(), 0);
}

}  // namespace
}  // namespace moemesh::router
