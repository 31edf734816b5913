// core/obs (bucket edges, (layer, expert) counters, text exposition with scrape-time refresh)
// and router/expert_load (heartbeat deltas, node restarts, the recent window, balancedness).
#include <string>

#include "core/obs/metrics.h"
#include "gtest/gtest.h"
#include "router/expert_load.h"

namespace moemesh {
namespace {

TEST(ObsTest, BucketEdgesAreVllms) {
  EXPECT_EQ(obs::TimeToFirstTokenBuckets().size(), 22u);
  EXPECT_EQ(obs::TimeToFirstTokenBuckets().front(), 0.001);
  EXPECT_EQ(obs::TimeToFirstTokenBuckets().back(), 2560.0);
  EXPECT_EQ(obs::InterTokenLatencyBuckets().size(), 19u);
  EXPECT_EQ(obs::InterTokenLatencyBuckets().back(), 80.0);
  EXPECT_EQ(obs::E2eRequestLatencyBuckets().size(), 21u);
  EXPECT_EQ(obs::E2eRequestLatencyBuckets().back(), 7680.0);
}

TEST(ObsTest, LayerExpertCountersStartAtZeroAndRefreshRunsAtScrape) {
  obs::MetricsRegistry registry;
  obs::LayerExpertCounters counters(
      registry.Counter("moemesh_expert_routed_tokens_total", "help"), {1, 3}, 2);
  counters.Add(3, 1, 5);
  counters.Add(0, 0, 7);  // not an MoE layer: ignored
  counters.Add(3, 9, 7);  // no such expert: ignored
  prometheus::Gauge& gauge = registry.Gauge("moemesh_placement_version", "help").Add({});
  int refreshes = 0;
  registry.AddRefresh([&] { gauge.Set(++refreshes); });
  const std::string text = registry.SerializeText();
  EXPECT_NE(text.find("moemesh_expert_routed_tokens_total{expert=\"0\",layer=\"1\"} 0"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("moemesh_expert_routed_tokens_total{expert=\"1\",layer=\"3\"} 5"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("layer=\"0\""), std::string::npos);
  EXPECT_NE(text.find("moemesh_placement_version 1"), std::string::npos) << text;
  EXPECT_EQ(refreshes, 1);
}

checkpoint::ModelConfig TinyConfig() {
  checkpoint::ModelConfig config;
  config.num_hidden_layers = 3;
  config.first_k_dense_replace = 1;
  config.moe_layer_freq = 1;
  config.n_routed_experts = 4;
  config.num_experts_per_tok = 2;
  return config;
}

moemesh::v1::HeartbeatRequest Heartbeat(const std::string& node, std::vector<uint64_t> layer1,
                                        std::vector<uint64_t> layer2) {
  moemesh::v1::HeartbeatRequest heartbeat;
  heartbeat.set_node_id(node);
  auto* a = heartbeat.add_expert_load();
  a->set_layer(1);
  for (uint64_t v : layer1) a->add_tokens(v);
  auto* b = heartbeat.add_expert_load();
  b->set_layer(2);
  for (uint64_t v : layer2) b->add_tokens(v);
  return heartbeat;
}

TEST(ExpertLoadTest, SumsNodesTakesDeltasSurvivesRestartsAndWindows) {
  router::ExpertLoadTracker tracker(TinyConfig(), {absl::Seconds(10), absl::Seconds(1)});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  tracker.OnHeartbeat(Heartbeat("attention-0", {1, 2, 3, 4}, {0, 0, 0, 8}), t0);
  tracker.OnHeartbeat(Heartbeat("attention-1", {1, 0, 0, 0}, {0, 0, 0, 0}), t0);
  tracker.OnHeartbeat(Heartbeat("attention-0", {1, 2, 3, 4}, {0, 0, 0, 8}), t0);  // repeated
  std::vector<router::LayerLoad> layers = tracker.Layers(t0);
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].layer, 1);
  EXPECT_EQ(layers[0].total, (std::vector<uint64_t>{2, 2, 3, 4}));
  EXPECT_EQ(layers[1].total, (std::vector<uint64_t>{0, 0, 0, 8}));
  EXPECT_EQ(layers[0].recent, layers[0].total);
  // attention-1 restarted: its counts start again from zero.
  tracker.OnHeartbeat(Heartbeat("attention-1", {0, 1, 0, 0}, {0, 0, 0, 0}), t0 + absl::Seconds(20));
  layers = tracker.Layers(t0 + absl::Seconds(20));
  EXPECT_EQ(layers[0].total, (std::vector<uint64_t>{2, 3, 3, 4}));
  EXPECT_EQ(layers[0].recent, (std::vector<uint64_t>{0, 1, 0, 0}));  // the older load left
  layers = tracker.Layers(t0 + absl::Seconds(40));
  EXPECT_EQ(layers[0].recent, (std::vector<uint64_t>{0, 0, 0, 0}));
}

TEST(ExpertLoadTest, BalancednessThroughThePlacement) {
  EXPECT_DOUBLE_EQ(router::ExpertLoadTracker::Balancedness({}), 1.0);
  EXPECT_DOUBLE_EQ(router::ExpertLoadTracker::Balancedness({0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(router::ExpertLoadTracker::Balancedness({1, 3}), 2.0 / 3.0);
  router::ExpertLoadTracker tracker(TinyConfig());
  const absl::Time now = absl::Now();
  tracker.OnHeartbeat(Heartbeat("a", {1, 2, 3, 4}, {0, 0, 0, 0}), now);
  moemesh::v1::Placement placement;
  placement.set_version(7);
  for (const char* id : {"expert-0", "expert-1"}) {
    auto* node = placement.add_nodes();
    node->set_node_id(id);
    node->set_healthy(true);
  }
  for (int layer : {1, 2}) {
    for (int e = 0; e < 4; ++e) {
      auto* replicas = placement.add_experts();
      replicas->set_layer(layer);
      replicas->set_expert(e);
      replicas->add_node_ids(e % 2 == 0 ? "expert-0" : "expert-1");
      if (e == 3) replicas->add_node_ids("expert-0");  // a replica: load split evenly
    }
  }
  const nlohmann::json body = tracker.LoadJson(placement, now);
  ASSERT_EQ(body["layers"].size(), 2u);
  EXPECT_EQ(body["layers"][0]["total"], nlohmann::json({1, 2, 3, 4}));
  EXPECT_EQ(body["placement"]["version"], 7);
  EXPECT_EQ(body["placement"]["experts"].size(), 8u);
  // expert-0: 1 + 3 + 2 (half of 4) = 6, expert-1: 2 + 2 = 4 -> mean 5 / max 6.
  EXPECT_DOUBLE_EQ(body["layers"][0]["balancedness"].get<double>(), 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(body["nodes"][0]["total_rows"][0].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(body["layers"][1]["balancedness"].get<double>(), 1.0);
}

}  // namespace
}  // namespace moemesh
