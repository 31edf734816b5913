// Reading the router's /v1/experts/load body and writing the placement JSON of `moemesh place`.
#include "core/placement/load_json.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moemesh::placement {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

// The shape router/expert_load.cc writes.
json RouterBody() {
  return json::parse(R"({
    "window_seconds": 60,
    "layers": [
      {"layer": 1, "total": [5, 0, 3], "recent": [1, 0, 0], "balancedness": 0.5},
      {"layer": 3, "total": [0, 7, 1], "recent": [0, 2, 2], "balancedness": 1.0}
    ],
    "nodes": [{"node": "a", "healthy": true, "total_rows": [5, 7], "recent_rows": [1, 4]}],
    "placement": {"version": 2, "experts": [{"layer": 1, "expert": 0, "nodes": ["a"]}]}
  })");
}

TEST(LoadJsonTest, ReadsEachLayersCountsAndLayerNumbers) {
  absl::StatusOr<LayerLoads> loads = ParseExpertLoadJson(RouterBody());
  ASSERT_TRUE(loads.ok()) << loads.status();
  EXPECT_EQ(loads->num_experts, 3);
  EXPECT_EQ(loads->layer_numbers, (std::vector<int>{1, 3}));
  EXPECT_EQ(loads->load, (std::vector<std::vector<double>>{{5, 0, 3}, {0, 7, 1}}));
  absl::StatusOr<LayerLoads> recent = ParseExpertLoadJson(RouterBody(), "recent");
  ASSERT_TRUE(recent.ok());
  EXPECT_EQ(recent->load[1], (std::vector<double>{0, 2, 2}));
}

TEST(LoadJsonTest, BadBodiesNameTheProblem) {
  auto message = [](const json& body) {
    absl::StatusOr<LayerLoads> loads = ParseExpertLoadJson(body);
    EXPECT_EQ(loads.status().code(), absl::StatusCode::kInvalidArgument) << body.dump();
    return std::string(loads.status().message());
  };
  EXPECT_THAT(message(json::array()), HasSubstr("expected a JSON object"));
  EXPECT_THAT(message(json::object()), HasSubstr("no \"layers\""));
  json body = RouterBody();
  body["layers"][1]["layer"] = 1;
  EXPECT_THAT(message(body), HasSubstr("layer 1 appears twice"));
  body = RouterBody();
  body["layers"][0].erase("total");
  EXPECT_THAT(message(body), HasSubstr("layers[0] (layer 1): no \"total\""));
  body = RouterBody();
  body["layers"][1]["total"][2] = "x";
  EXPECT_THAT(message(body), HasSubstr("total[2] = \"x\""));
  body = RouterBody();
  body["layers"][1]["total"][0] = -1;
  EXPECT_THAT(message(body), HasSubstr("not a non-negative number"));
  body = RouterBody();
  body["layers"][1]["total"] = {1, 2};
  EXPECT_THAT(message(body), HasSubstr("has 2 experts, layers[0] has 3"));
  body = RouterBody();
  body["layers"][0]["layer"] = "one";
  EXPECT_THAT(message(body), HasSubstr("\"layer\" must be a non-negative integer"));
}

TEST(LoadJsonTest, PlacementJsonListsEveryExpertWithModelLayerAndNodeIds) {
  PlacementPlan plan;
  plan.layers.push_back(LayerPlacement{{{0, 1}, {1}}, 1.0, 0});
  plan.layers.push_back(LayerPlacement{{{1}, {0}}, 1.0, 0});
  const json out = json::parse(
      PlacementJson(plan, {4, 9}, {PlannerNode{"0", 0}, PlannerNode{"1", 0}}).dump());
  EXPECT_EQ(out, json::parse(R"({"experts": [
      {"layer": 4, "expert": 0, "nodes": ["0", "1"]}, {"layer": 4, "expert": 1, "nodes": ["1"]},
      {"layer": 9, "expert": 0, "nodes": ["1"]}, {"layer": 9, "expert": 1, "nodes": ["0"]}]})"));
}

TEST(LoadJsonTest, PlacementBecomesThePreviousPlacementPerLoadLayer) {
  absl::StatusOr<LayerLoads> loads = ParseExpertLoadJson(RouterBody());
  ASSERT_TRUE(loads.ok());
  const json experts = json::parse(R"([
      {"layer": 3, "expert": 2, "nodes": ["b", "a"]}, {"layer": 1, "expert": 0, "nodes": ["a"]}])");
  absl::StatusOr<std::vector<std::vector<std::vector<std::string>>>> previous =
      ParsePlacementJson(experts, *loads);
  ASSERT_TRUE(previous.ok()) << previous.status();
  ASSERT_EQ(previous->size(), 2u);
  EXPECT_EQ((*previous)[0], (std::vector<std::vector<std::string>>{{"a"}, {}, {}}));
  EXPECT_EQ((*previous)[1], (std::vector<std::vector<std::string>>{{}, {}, {"b", "a"}}));

  auto message = [&](const char* text) {
    absl::StatusOr<std::vector<std::vector<std::vector<std::string>>>> parsed =
        ParsePlacementJson(json::parse(text), *loads);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << text;
    return std::string(parsed.status().message());
  };
  EXPECT_THAT(message(R"({})"), HasSubstr("not an array"));
  EXPECT_THAT(message(R"([{"layer": 2, "expert": 0, "nodes": []}])"),
              HasSubstr("layer 2 has no load entry"));
  EXPECT_THAT(message(R"([{"layer": 1, "expert": 3, "nodes": []}])"),
              HasSubstr("expert 3 is out of range"));
  EXPECT_THAT(message(R"([{"layer": 1, "expert": 0, "nodes": []},
                          {"layer": 1, "expert": 0, "nodes": []}])"),
              HasSubstr("listed twice"));
  EXPECT_THAT(message(R"([{"layer": 1, "expert": 0, "nodes": [7]}])"),
              HasSubstr("node ids must be strings"));
  EXPECT_THAT(message(R"([{"layer": 1, "nodes": []}])"), HasSubstr("needs integer"));
}

}  // namespace
}  // namespace moemesh::placement
