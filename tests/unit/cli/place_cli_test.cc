// `moemesh place` as a user runs it: the router's load JSON in, a placement on stdout that keeps
// every constraint, the predicted balancedness on stderr, and clear errors for bad input.
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::json;

struct PlaceResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string ReadAll(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

PlaceResult RunPlace(const std::string& arguments) {
  // One file per test: ctest -j runs the tests of this binary in parallel.
  const std::string err_path = ::testing::TempDir() + "place_cli_stderr_" +
                               ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                               ".txt";
  const std::string command =
      std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh place " + arguments + " 2>" + err_path;
  PlaceResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  size_t read;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.out.append(buffer.data(), read);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = ReadAll(err_path);
  return result;
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// A /v1/experts/load body: MoE layers 1..3 of 16 experts, one very hot expert per layer (a
// different one in each), the rest decreasing.
json SkewedLoad() {
  json layers = json::array();
  for (int layer = 1; layer <= 3; ++layer) {
    std::vector<int> total(16);
    for (int e = 0; e < 16; ++e) total[(e + 5 * layer) % 16] = 2000 / (e + 1);
    layers.push_back({{"layer", layer}, {"total", total}, {"recent", total},
                      {"balancedness", 0.5}});
  }
  return {{"window_seconds", 60}, {"layers", layers}, {"nodes", json::array()},
          {"placement", {{"version", 1}, {"experts", json::array()}}}};
}

TEST(PlaceCliTest, PrintsAPlacementOfEveryExpertWithEqualSlotsAndItsBalancedness) {
  const std::string load = WriteFile("place_skewed.json", SkewedLoad().dump());
  PlaceResult result = RunPlace("--load " + load + " --expert-nodes 4 --redundant-experts 4");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const json out = json::parse(result.out);
  ASSERT_TRUE(out.contains("experts"));
  ASSERT_EQ(out["experts"].size(), 3u * 16u);
  std::map<int, std::vector<int>> per_node;  // layer -> physical experts per node
  std::map<int, std::vector<double>> node_load;
  const json load_body = SkewedLoad();
  for (const json& entry : out["experts"]) {
    const int layer = entry["layer"];
    const int expert = entry["expert"];
    ASSERT_GE(layer, 1);
    ASSERT_LE(layer, 3);
    const std::vector<std::string> nodes = entry["nodes"];
    ASSERT_FALSE(nodes.empty());
    EXPECT_EQ(std::set<std::string>(nodes.begin(), nodes.end()).size(), nodes.size());
    per_node[layer].resize(4);
    node_load[layer].resize(4);
    const double rows = load_body["layers"][layer - 1]["total"][expert].get<double>();
    for (const std::string& node : nodes) {
      const int index = std::stoi(node);
      ASSERT_GE(index, 0);
      ASSERT_LT(index, 4);
      ++per_node[layer][index];
      node_load[layer][index] += rows / nodes.size();
    }
  }
  for (const auto& [layer, counts] : per_node) {
    EXPECT_EQ(counts, (std::vector<int>{5, 5, 5, 5})) << "layer " << layer;
    // The hottest expert alone carries ~30% of the rows; modulo on 4 nodes gives balancedness
    // ~0.5, the planner's replicas bring it near 1.
    double sum = 0, max = 0;
    for (double l : node_load[layer]) sum += l, max = std::max(max, l);
    EXPECT_GT(sum / 4 / max, 0.9) << "layer " << layer;
  }
  EXPECT_NE(result.err.find("predicted balancedness mean"), std::string::npos) << result.err;
}

TEST(PlaceCliTest, MinReplicasTwoPutsEveryExpertOnTwoNodes) {
  const std::string load = WriteFile("place_skewed2.json", SkewedLoad().dump());
  PlaceResult result = RunPlace("--load " + load + " --expert-nodes 3 --min-replicas 2");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const json placement = json::parse(result.out);  // (a temporary's element would dangle)
  for (const json& entry : placement["experts"]) {
    EXPECT_GE(entry["nodes"].size(), 2u) << entry.dump();
  }
}

TEST(PlaceCliTest, KeepPlacementReplansWithoutMovingWhatNeedNotMove) {
  json body = SkewedLoad();
  const std::string load = WriteFile("place_keep0.json", body.dump());
  PlaceResult first = RunPlace("--load " + load + " --node-ids a,b,c,d --redundant-experts 4");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const json plan = json::parse(first.out);
  EXPECT_EQ(plan["experts"][0]["nodes"][0].get<std::string>().size(), 1u);  // a name, not "0"
  // The same load with that placement current: nothing moves, the same plan comes out.
  body["placement"]["experts"] = plan["experts"];
  PlaceResult same = RunPlace("--load " + WriteFile("place_keep1.json", body.dump()) +
                              " --node-ids a,b,c,d --redundant-experts 4 --keep-placement");
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_NE(same.err.find("place: 0 of 60 replicas move"), std::string::npos) << same.err;
  EXPECT_EQ(json::parse(same.out), plan);
  // Node d leaves: what it held (5 per layer) moves, and not much more.
  PlaceResult drained = RunPlace("--load " + WriteFile("place_keep2.json", body.dump()) +
                                 " --node-ids a,b,c --redundant-experts 3 --keep-placement");
  ASSERT_EQ(drained.exit_code, 0) << drained.err;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(drained.err, match, std::regex(R"(place: (\d+) of 54 replicas)")))
      << drained.err;
  const int moved = std::stoi(match[1]);
  EXPECT_GE(moved, 15);
  EXPECT_LT(moved, 30);  // of 3 x 18 (19 rounded down to 3 x 6); a fresh plan moves most
  const json drained_placement = json::parse(drained.out);
  for (const json& entry : drained_placement["experts"]) {
    for (const json& node : entry["nodes"]) EXPECT_NE(node, "d");
  }
}

TEST(PlaceCliTest, BadInputFailsWithAMessageNamingTheProblem) {
  PlaceResult result = RunPlace("--load /nonexistent/load.json --expert-nodes 2");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("cannot read --load file /nonexistent/load.json"), std::string::npos)
      << result.err;

  result = RunPlace("--load " + WriteFile("place_bad.json", "{not json") + " --expert-nodes 2");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("is not valid JSON"), std::string::npos) << result.err;

  json body = SkewedLoad();
  body["layers"][2]["total"] = {1, 2, 3};
  result = RunPlace("--load " + WriteFile("place_short.json", body.dump()) + " --expert-nodes 2");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("layers[2] (layer 3) has 3 experts"), std::string::npos)
      << result.err;

  // 16 experts cannot fit on 2 nodes holding 4 each.
  result = RunPlace("--load " + WriteFile("place_ok.json", SkewedLoad().dump()) +
                    " --expert-nodes 2 --max-experts-per-layer 4");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("16 physical experts per layer needed"), std::string::npos)
      << result.err;
  EXPECT_TRUE(result.out.empty());

  result = RunPlace("--expert-nodes 2");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--load and --expert-nodes (or --node-ids) are required"),
            std::string::npos);
  result = RunPlace("--load x.json --expert-nodes zero");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--expert-nodes: 'zero' is not an integer"), std::string::npos);
}

}  // namespace
