// `moemesh plan` and `moemesh make-checkpoint --sparse` as a user runs them: the 671B plan from
// the released config.json and from a sparse full-size checkpoint agree, --write-overlay writes
// the overlay's files, and bad input is a usage error.
#include <stdlib.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::string kRealConfig =
    std::string(MOEMESH_SHARED_DIR) + "/fixtures/deepseek-v3-671b/config.json";

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// stdout only (stderr is dropped unless `with_stderr`).
CommandResult RunMoemesh(const std::string& arguments, bool with_stderr = false) {
  const std::string command = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh " + arguments +
                              (with_stderr ? " 2>&1" : " 2>/dev/null");
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  size_t read;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), read);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class PlanCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") +
                          "/moemesh_plan_cli.XXXXXX";
    dir_ = ::mkdtemp(pattern.data());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(PlanCliTest, SparseCheckpointAndConfigGiveTheSamePlan) {
  const std::string model = dir_ + "/ds";
  // Without --sparse the 671B preset would write 688 GB: refused.
  EXPECT_EQ(RunMoemesh("make-checkpoint --preset deepseek-v3-671b " + model).exit_code, 2);
  EXPECT_FALSE(fs::exists(model));
  ASSERT_EQ(RunMoemesh("make-checkpoint --preset deepseek-v3-671b --sparse " + model).exit_code, 0);

  const CommandResult from_config =
      RunMoemesh("plan --model-config " + kRealConfig + " --gpu-memory 80GiB --json");
  const CommandResult from_model =
      RunMoemesh("plan --model " + model + " --gpu-memory 80GiB --json");
  ASSERT_EQ(from_config.exit_code, 0) << from_config.output;
  ASSERT_EQ(from_model.exit_code, 0) << from_model.output;
  json config_plan = json::parse(from_config.output);
  json model_plan = json::parse(from_model.output);
  // The headers of the sparse checkpoint give the same bytes as the arithmetic.
  ASSERT_TRUE(model_plan.contains("checkpoint"));
  EXPECT_EQ(model_plan["checkpoint"]["shards"], 163);
  EXPECT_EQ(model_plan["checkpoint"]["expert_bytes"], config_plan["expert_bytes_total"]);
  EXPECT_EQ(model_plan["checkpoint"]["attention_bytes"], config_plan["attention_weight_bytes"]);
  EXPECT_EQ(model_plan["checkpoint"]["mtp_bytes"], config_plan["mtp_bytes"]);
  model_plan.erase("checkpoint");
  EXPECT_EQ(model_plan, config_plan);
  EXPECT_EQ(config_plan["expert_bytes_total"], 654068416512ull);
  EXPECT_EQ(config_plan["kv_bytes_per_token"], 140544);
  EXPECT_EQ(config_plan["expert_nodes"], 9);  // 256 / 30 per GPU
}

TEST_F(PlanCliTest, WritesAnOverlayThatPointsAtTheBase) {
  const std::string overlay = dir_ + "/overlays/mine";
  const CommandResult result = RunMoemesh(
      "plan --model-config " + kRealConfig + " --gpu-memory 141GB --expert-nodes 12 "
      "--attention-nodes 3 --write-overlay " + overlay + " --k8s-base " + dir_ + "/base");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::ifstream kustomization(overlay + "/kustomization.yaml");
  std::stringstream text;
  text << kustomization.rdbuf();
  EXPECT_NE(text.str().find("  - ../../base\n"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("plan.yaml"), std::string::npos);
  std::ifstream env(overlay + "/plan.env");
  std::stringstream env_text;
  env_text << env.rdbuf();
  EXPECT_NE(env_text.str().find("EXPERT_NODES=12\n"), std::string::npos) << env_text.str();
  EXPECT_NE(env_text.str().find("ATTENTION_NODES=3\n"), std::string::npos);
  std::ifstream plan(overlay + "/plan.yaml");
  std::stringstream plan_text;
  plan_text << plan.rdbuf();
  EXPECT_NE(plan_text.str().find("--expert-nodes 12"), std::string::npos);  // the command
  EXPECT_NE(plan_text.str().find("  replicas: 12\n"), std::string::npos) << plan_text.str();
}

TEST_F(PlanCliTest, BadInputIsAUsageError) {
  EXPECT_EQ(RunMoemesh("plan --model-config " + kRealConfig).exit_code, 2);  // no --gpu-memory
  const CommandResult bad_size =
      RunMoemesh("plan --model-config " + kRealConfig + " --gpu-memory 80 apples", true);
  EXPECT_EQ(bad_size.exit_code, 2);
  const CommandResult units =
      RunMoemesh("plan --model-config " + kRealConfig + " --gpu-memory 80XB", true);
  EXPECT_EQ(units.exit_code, 2);
  EXPECT_NE(units.output.find("unknown unit"), std::string::npos) << units.output;
  // Too few expert nodes for the experts: a runtime error that says how many are needed.
  const CommandResult few = RunMoemesh(
      "plan --model-config " + kRealConfig + " --gpu-memory 80GiB --expert-nodes 4", true);
  EXPECT_EQ(few.exit_code, 1);
  EXPECT_NE(few.output.find("at least 9"), std::string::npos) << few.output;
  EXPECT_EQ(RunMoemesh("plan --model /nonexistent --gpu-memory 80GiB").exit_code, 1);
}

}  // namespace
