// In-process cluster on loopback: the router's ControlPlane served over gRPC, expert nodes with
// the tiny-r1 fixture registering, loading their placement share and answering Dispatch over the
// real GrpcExpertTransport.
#include <atomic>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "core/checkpoint/checkpoint.h"
#include "core/comm/grpc_expert_transport.h"
#include "core/comm/grpc_server.h"
#include "core/model/expert_shard.h"
#include "expert_node/expert_service.h"
#include "core/kernels/cpu/elementwise.h"
#include "gtest/gtest.h"
#include "router/control_plane.h"
#include "tests/unit/comm/grpc_test_util.h"

namespace moemesh::expert_node {
namespace {

const std::string kFixture = std::string(MOEMESH_SHARED_DIR) + "/fixtures/tiny-r1";

class ExpertNodeClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto checkpoint = checkpoint::Checkpoint::Open(kFixture);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = *std::move(checkpoint);
    router::ControlPlaneOptions options;
    options.expected_expert_nodes = 2;
    options.expected_attention_nodes = 0;
    options.heartbeat_interval_seconds = 0.02;
    options.heartbeat_timeout = absl::Milliseconds(300);
    plane_ = std::make_unique<router::ControlPlane>(checkpoint_->config(), options);
    router_ = comm::StartGrpcServer("127.0.0.1:0", {plane_.get()}, &router_port_);
    ASSERT_NE(router_, nullptr);
    a_ = StartNode("ex-a");
    b_ = StartNode("ex-b");
    ASSERT_TRUE(WaitReady()) << why_;
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    if (router_ != nullptr) comm::ShutdownGrpcServer(router_.get(), 0);
  }

  std::unique_ptr<ExpertNode> StartNode(const std::string& name, int port = 0) {
    ExpertNodeOptions options;
    options.model_dir = kFixture;
    options.router_address = "127.0.0.1:" + std::to_string(router_port_);
    options.node_name = name;
    options.port = port;
    options.dispatch_threads = 2;
    auto node = ExpertNode::Start(options);
    EXPECT_TRUE(node.ok()) << node.status();
    return node.ok() ? *std::move(node) : nullptr;
  }

  bool WaitReady() {
    for (int i = 0; i < 500; ++i) {
      if (plane_->Ready(&why_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Random rows routed to distinct experts (top-k of the fixture), weights in (0, 1).
  model::GateDecision RandomDecision(int64_t rows, uint32_t seed) {
    const auto& config = checkpoint_->config();
    std::mt19937 rng(seed);
    model::GateDecision decision;
    decision.top_k = config.num_experts_per_tok;
    std::uniform_real_distribution<float> weight(0.1f, 1.0f);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int32_t> experts(config.n_routed_experts);
      for (int e = 0; e < config.n_routed_experts; ++e) experts[e] = e;
      std::shuffle(experts.begin(), experts.end(), rng);
      for (int k = 0; k < decision.top_k; ++k) {
        decision.experts.push_back(experts[k]);
        decision.weights.push_back(weight(rng));
      }
    }
    return decision;
  }

  std::vector<float> RandomHidden(int64_t rows, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> hidden(static_cast<size_t>(rows * checkpoint_->config().hidden_size));
    for (float& v : hidden) v = normal(rng);
    return hidden;
  }

  // The batch for the experts of `decision` that `held` says are on the node (all rows sent).
  comm::DispatchBatch BatchFor(int layer, const std::vector<float>& hidden,
                               const model::GateDecision& decision,
                               const std::function<bool(int)>& held, uint64_t version) {
    comm::DispatchBatch batch;
    batch.layer = layer;
    batch.placement_version = version;
    batch.hidden_size = checkpoint_->config().hidden_size;
    batch.hidden = comm::FloatBuffer(hidden);
    std::map<int, comm::ExpertSliceRows> slices;
    for (int64_t r = 0; r < decision.rows(); ++r) {
      for (int k = 0; k < decision.top_k; ++k) {
        const int expert = decision.experts[r * decision.top_k + k];
        if (!held(expert)) continue;
        auto& slice = slices[expert];
        slice.expert = expert;
        slice.rows.push_back(static_cast<uint32_t>(r));
        slice.gate_weights.push_back(decision.weights[r * decision.top_k + k]);
      }
    }
    for (auto& [expert, slice] : slices) batch.slices.push_back(slice);
    return batch;
  }

  std::unique_ptr<checkpoint::Checkpoint> checkpoint_;
  std::unique_ptr<router::ControlPlane> plane_;
  std::unique_ptr<grpc::Server> router_;
  int router_port_ = 0;
  std::unique_ptr<ExpertNode> a_, b_;
  std::string why_;
};

TEST_F(ExpertNodeClusterTest, NodesLoadTheirShareAndDispatchMatchesComputePartial) {
  const moemesh::v1::Placement placement = plane_->CurrentPlacement();
  ASSERT_EQ(placement.nodes_size(), 2);
  // Registration order decides e % 2; find which node is which.
  const std::string first = placement.nodes(0).node_id();
  ExpertNode* even = a_->node_id() == first ? a_.get() : b_.get();
  ExpertNode* odd = even == a_.get() ? b_.get() : a_.get();
  EXPECT_EQ(ShareOf(placement, even->node_id()).size(), 3u * 8);
  for (const auto& [layer, expert] : even->service().shard()->HeldExperts()) {
    EXPECT_EQ(expert % 2, 0);
  }
  EXPECT_EQ(even->service().shard()->HeldExperts(), ShareOf(placement, even->node_id()));
  EXPECT_EQ(odd->service().shard()->HeldExperts(), ShareOf(placement, odd->node_id()));
  EXPECT_EQ(moemesh::testing::HealthCheck(even->address()), 1);
  EXPECT_NE(moemesh::testing::ReflectionListServices(even->address()).find("moemesh.v1.ExpertService"),
            std::string::npos);

  auto all = model::ExpertShard::LoadAll(*checkpoint_);
  ASSERT_TRUE(all.ok()) << all.status();

  comm::GrpcExpertTransport transport;
  const int hidden_size = checkpoint_->config().hidden_size;
  for (int layer = 1; layer <= 3; ++layer) {
    const int64_t rows = 7;
    const auto hidden = RandomHidden(rows, 100 + layer);
    const auto decision = RandomDecision(rows, 200 + layer);
    const uint64_t version = placement.version();
    const comm::DispatchBatch even_batch =
        BatchFor(layer, hidden, decision, [](int e) { return e % 2 == 0; }, version);
    const comm::DispatchBatch odd_batch =
        BatchFor(layer, hidden, decision, [](int e) { return e % 2 == 1; }, version);
    auto even_future = transport.Dispatch(even->node_id(), even->address(), 0, even_batch);
    auto odd_future = transport.Dispatch(odd->node_id(), odd->address(), 1, odd_batch);
    auto even_result = even_future.get();
    auto odd_result = odd_future.get();
    ASSERT_TRUE(even_result.ok()) << even_result.status();
    ASSERT_TRUE(odd_result.ok()) << odd_result.status();
    // Each (row, expert) output is the expert's FFN on that row, unweighted, in slice order.
    for (const auto* pair : {&even_batch, &odd_batch}) {
      const comm::DispatchResult& result = pair == &even_batch ? *even_result : *odd_result;
      size_t expected_rows = 0;
      for (const auto& slice : pair->slices) expected_rows += slice.rows.size();
      ASSERT_EQ(result.expert_outputs.size(), expected_rows * hidden_size);
      size_t offset = 0;
      for (const auto& slice : pair->slices) {
        std::vector<float> x(slice.rows.size() * hidden_size), y(x.size());
        for (size_t r = 0; r < slice.rows.size(); ++r) {
          std::copy_n(hidden.data() + slice.rows[r] * hidden_size, hidden_size,
                      x.data() + r * hidden_size);
        }
        ASSERT_TRUE((*all)->ComputeExpert(layer, slice.expert, x.data(),
                                          static_cast<int64_t>(slice.rows.size()), y.data())
                        .ok());
        EXPECT_TRUE(std::equal(y.begin(), y.end(), result.expert_outputs.begin() + offset))
            << "layer " << layer << " expert " << slice.expert;  // bitwise
        offset += y.size();
      }
    }
    // Weighted and added per row in ascending expert id over both nodes: bitwise the single
    // process's sum over all experts.
    std::vector<std::vector<std::tuple<int, float, const float*>>> per_row(rows);
    for (const auto* pair : {&even_batch, &odd_batch}) {
      const comm::DispatchResult& result = pair == &even_batch ? *even_result : *odd_result;
      const float* data = result.expert_outputs.data();
      for (const auto& slice : pair->slices) {
        for (size_t r = 0; r < slice.rows.size(); ++r) {
          per_row[slice.rows[r]].emplace_back(slice.expert, slice.gate_weights[r], data);
          data += hidden_size;
        }
      }
    }
    std::vector<float> combined(rows * hidden_size, 0.0f), full(rows * hidden_size);
    for (int64_t r = 0; r < rows; ++r) {
      std::sort(per_row[r].begin(), per_row[r].end(),
                [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
      for (const auto& [expert, weight, output] : per_row[r]) {
        kernels::Axpy(hidden_size, weight, output, combined.data() + r * hidden_size);
      }
    }
    ASSERT_TRUE((*all)->Compute(layer, hidden.data(), rows, decision, full.data()).ok());
    EXPECT_EQ(combined, full) << "layer " << layer;  // bitwise
  }
  EXPECT_GE(even->service().counters().rows, 21u);
}

TEST_F(ExpertNodeClusterTest, ExpertNotHeldIsFailedPreconditionNamingIt) {
  const moemesh::v1::Placement placement = plane_->CurrentPlacement();
  const std::string first = placement.nodes(0).node_id();
  ExpertNode* even = a_->node_id() == first ? a_.get() : b_.get();
  comm::GrpcExpertTransport transport;
  const auto hidden = RandomHidden(3, 1);
  const auto decision = RandomDecision(3, 2);
  comm::DispatchBatch batch = BatchFor(2, hidden, decision, [](int) { return true; }, 1);
  auto result = transport.Dispatch(even->node_id(), even->address(), 0, batch).get();
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  std::set<int> odd_experts;
  for (int32_t e : decision.experts) {
    if (e % 2 == 1) odd_experts.insert(e);
  }
  ASSERT_FALSE(odd_experts.empty());
  EXPECT_NE(result.status().message().find(std::to_string(*odd_experts.begin())),
            absl::string_view::npos)
      << result.status();
  // A malformed batch (not an MoE layer) is INVALID_ARGUMENT.
  batch.layer = 0;
  auto invalid = transport.Dispatch(even->node_id(), even->address(), 0, batch).get();
  EXPECT_TRUE(absl::IsInvalidArgument(invalid.status())) << invalid.status();
}

// Expert nodes on this host through shared-memory mailboxes: the same bits as the stream, from
// several threads at once, the same errors, and a node that shuts down fails the next dispatch
// at once.
TEST_F(ExpertNodeClusterTest, SharedMemoryDispatchGivesTheStreamsBitsAndErrors) {
  const moemesh::v1::Placement placement = plane_->CurrentPlacement();
  const std::string first = placement.nodes(0).node_id();
  ExpertNode* even = a_->node_id() == first ? a_.get() : b_.get();
  ExpertNode* odd = even == a_.get() ? b_.get() : a_.get();
  comm::GrpcExpertTransport stream;
  comm::GrpcExpertTransportOptions shared_options;
  shared_options.shared_memory = true;
  comm::GrpcExpertTransport shared(shared_options);
  std::vector<std::thread> threads;
  std::atomic<int> compared{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int layer = 1; layer <= 3; ++layer) {
        const int64_t rows = 1 + 5 * t;
        const auto hidden = RandomHidden(rows, 300 + 10 * t + layer);
        const auto decision = RandomDecision(rows, 400 + 10 * t + layer);
        for (ExpertNode* node : {even, odd}) {
          const int parity = node == even ? 0 : 1;
          const comm::DispatchBatch batch = BatchFor(
              layer, hidden, decision, [parity](int e) { return e % 2 == parity; },
              placement.version());
          auto over_stream = stream.Dispatch(node->node_id(), node->address(), t, batch).get();
          auto over_memory = shared.Dispatch(node->node_id(), node->address(), t, batch).get();
          ASSERT_TRUE(over_stream.ok()) << over_stream.status();
          ASSERT_TRUE(over_memory.ok()) << over_memory.status();
          ASSERT_FALSE(over_memory->expert_outputs.empty());
          EXPECT_EQ(over_memory->expert_outputs.ToVector(), over_stream->expert_outputs.ToVector())
              << "layer " << layer;  // bitwise
          ++compared;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(compared.load(), 18);
  EXPECT_EQ(shared.counters().shared_memory_dispatches, 18u);
  EXPECT_EQ(shared.counters().ok, 18u);
  EXPECT_EQ(stream.counters().shared_memory_dispatches, 0u);
  EXPECT_GT(shared.counters().bytes_received, 0u);

  // NOT_HELD names the expert; a malformed batch is INVALID_ARGUMENT.
  const auto hidden = RandomHidden(3, 1);
  const auto decision = RandomDecision(3, 2);
  comm::DispatchBatch all = BatchFor(2, hidden, decision, [](int) { return true; }, 1);
  auto not_held = shared.Dispatch(even->node_id(), even->address(), 0, all).get();
  EXPECT_TRUE(absl::IsFailedPrecondition(not_held.status())) << not_held.status();
  EXPECT_NE(not_held.status().message().find("shared memory"), absl::string_view::npos);
  all.layer = 0;
  auto invalid = shared.Dispatch(even->node_id(), even->address(), 0, all).get();
  EXPECT_TRUE(absl::IsInvalidArgument(invalid.status())) << invalid.status();

  // The node shuts down: its mailboxes stop being served and the next dispatch fails fast.
  const std::string id = odd->node_id();
  const std::string address = odd->address();
  const comm::DispatchBatch batch =
      BatchFor(1, hidden, decision, [](int e) { return e % 2 == 1; }, placement.version());
  const auto start = std::chrono::steady_clock::now();
  (odd == a_.get() ? a_ : b_).reset();
  auto after = shared.Dispatch(id, address, 0, batch).get();
  EXPECT_TRUE(absl::IsUnavailable(after.status())) << after.status();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

// A node restarted on its address: the mailboxes pooled for the old process are dead (their
// liveness lock was let go); the next dispatch attaches a new one instead of failing on them.
TEST_F(ExpertNodeClusterTest, SharedMemoryPoolSurvivesANodeRestartOnItsAddress) {
  comm::GrpcExpertTransportOptions options;
  options.shared_memory = true;
  comm::GrpcExpertTransport transport(options);
  const std::string id = b_->node_id();
  const std::string address = b_->address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  // A batch of the node's own experts (rows 0..1 to its first held expert of some layer).
  auto own_batch = [&]() -> std::optional<comm::DispatchBatch> {
    std::shared_ptr<const model::ExpertShard> shard = b_ == nullptr ? nullptr : b_->service().shard();
    if (shard == nullptr || shard->HeldExperts().empty()) return std::nullopt;
    const auto [layer, expert] = shard->HeldExperts().front();
    model::GateDecision decision;
    decision.top_k = 1;
    decision.experts = {expert, expert};
    decision.weights = {0.5f, 0.25f};
    return BatchFor(layer, RandomHidden(2, 9), decision, [](int) { return true; }, 0);
  };
  ASSERT_TRUE(own_batch().has_value());
  ASSERT_TRUE(transport.Dispatch(id, address, 0, *own_batch()).get().ok());
  ASSERT_TRUE(transport.Dispatch(id, address, 1, *own_batch()).get().ok());
  EXPECT_EQ(transport.counters().shared_memory_dispatches, 2u);

  b_->Shutdown(0);
  b_.reset();
  b_ = StartNode("ex-b", port);
  ASSERT_NE(b_, nullptr);
  ASSERT_EQ(b_->address(), address);
  std::optional<comm::DispatchBatch> batch;
  for (int i = 0; i < 1000 && !(batch = own_batch()).has_value(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(batch.has_value()) << "the restarted node loaded no experts";
  const comm::ExpertTransportCounters before = transport.counters();
  auto after = transport.Dispatch(id, address, 0, *batch).get();
  EXPECT_TRUE(after.ok()) << after.status();
  const comm::ExpertTransportCounters counters = transport.counters();
  EXPECT_EQ(counters.unavailable, before.unavailable);
  EXPECT_EQ(counters.shared_memory_dispatches, before.shared_memory_dispatches + 1);
}

TEST_F(ExpertNodeClusterTest, KilledNodeFailsFastIsReplannedAroundAndRejoinsOnRestart) {
  comm::GrpcExpertTransportOptions transport_options;
  transport_options.dispatch_deadline = absl::Seconds(3);
  comm::GrpcExpertTransport transport(transport_options);
  const std::string id = b_->node_id();
  const std::string old_address = b_->address();
  const auto share = ShareOf(plane_->CurrentPlacement(), id);
  ASSERT_FALSE(share.empty()) << plane_->CurrentPlacement().DebugString().substr(0, 600);
  const int layer = share.front().first;
  const int expert = share.front().second;
  const auto hidden = RandomHidden(2, 5);
  model::GateDecision decision;
  decision.top_k = 1;
  decision.experts = {expert, expert};
  decision.weights = {0.5f, 0.25f};
  auto batch = [&] {
    return BatchFor(layer, hidden, decision, [](int) { return true; }, 0);
  };
  ASSERT_TRUE(transport.Dispatch(id, old_address, 0, batch()).get().ok());

  const auto start = std::chrono::steady_clock::now();
  b_->Shutdown(0);
  b_.reset();
  auto after = transport.Dispatch(id, old_address, 0, batch()).get();
  EXPECT_TRUE(absl::IsUnavailable(after.status())) << after.status();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 3.5);

  // The router notices the silence (a membership change): it re-plans without the node, the
  // survivor loads the orphaned experts and every expert is served again.
  auto names_node = [&] {
    const moemesh::v1::Placement placement = plane_->CurrentPlacement();
    for (const auto& entry : placement.experts()) {
      for (const std::string& node : entry.node_ids()) {
        if (node == id) return true;
      }
    }
    return false;
  };
  for (int i = 0; i < 1000 && (names_node() || plane_->FirstUnservedExpert().has_value()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(names_node()) << "the placement still gives experts to the dead node";
  EXPECT_EQ(plane_->FirstUnservedExpert(), std::nullopt);

  // Restart under the same name (new port): same id, a member again, ready, every expert served.
  b_ = StartNode("ex-b");
  ASSERT_NE(b_, nullptr);
  // It registers, and the rejoin re-plan gives it experts again.
  for (int i = 0; i < 1000 && !names_node(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(names_node()) << "the restarted node got no experts";
  ASSERT_TRUE(WaitReady()) << why_;
  EXPECT_EQ(b_->node_id(), id);
  EXPECT_EQ(plane_->FirstUnservedExpert(), std::nullopt);
}

// Make-before-break on the expert side: a node joins, the router plans a target, the nodes load
// what they gain and the router commits; while an attention node still reports the old version
// every node keeps its old experts too, and frees them only once it reports the new one.
TEST_F(ExpertNodeClusterTest, OldExpertsAreFreedOnlyAfterTheAttentionNodeSwitches) {
  moemesh::v1::RegisterRequest attention;
  attention.set_kind(moemesh::v1::NODE_KIND_ATTENTION);
  attention.set_address("127.0.0.1:1");
  attention.set_preferred_id("fake-attention");
  moemesh::v1::RegisterReply registered;
  ASSERT_TRUE(plane_->Register(nullptr, &attention, &registered).ok());
  const moemesh::v1::Placement before = plane_->CurrentPlacement();
  std::atomic<uint64_t> used{before.version()};
  std::atomic<bool> stop{false};
  std::thread heartbeats([&] {
    while (!stop) {
      moemesh::v1::HeartbeatRequest request;
      request.set_node_id("fake-attention");
      request.set_used_placement_version(used);
      moemesh::v1::HeartbeatReply reply;
      plane_->Heartbeat(nullptr, &request, &reply);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::unique_ptr<ExpertNode> c = StartNode("ex-c");
  ASSERT_NE(c, nullptr);
  moemesh::v1::Placement after;
  for (int i = 0; i < 1000; ++i) {
    after = plane_->CurrentPlacement();
    if (!ShareOf(after, "ex-c").empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(ShareOf(after, "ex-c").empty()) << "the joining node got no experts";
  EXPECT_GT(after.version(), before.version());
  auto held = [](ExpertNode* node) { return node->service().shard()->HeldExperts(); };
  auto union_of = [&](const std::string& id) {
    std::set<model::ExpertKey> keys;
    for (const auto& key : ShareOf(before, id)) keys.insert(key);
    for (const auto& key : ShareOf(after, id)) keys.insert(key);
    return std::vector<model::ExpertKey>(keys.begin(), keys.end());
  };
  // Committed, but the attention node still uses the old version: old and new experts held.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(held(a_.get()), union_of("ex-a"));
  EXPECT_EQ(held(b_.get()), union_of("ex-b"));
  EXPECT_NE(held(a_.get()), ShareOf(after, "ex-a")) << "the re-plan moved nothing off ex-a";
  // It switches: the old experts go.
  used = after.version();
  bool freed = false;
  for (int i = 0; i < 500 && !freed; ++i) {
    freed = held(a_.get()) == ShareOf(after, "ex-a") && held(b_.get()) == ShareOf(after, "ex-b");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(freed);
  EXPECT_EQ(held(c.get()), ShareOf(after, "ex-c"));
  stop = true;
  heartbeats.join();
}

}  // namespace
}  // namespace moemesh::expert_node
