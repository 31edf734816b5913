// `moemesh generate` as a user runs it: JSON shape, batching, greedy goldens, seeded sampling,
// and usage errors.
#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/tiny_r1.h"

namespace {

using nlohmann::json;

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

CommandResult RunMoemesh(const std::string& arguments) {
  const std::string command =
      std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh " + arguments + " 2>&1";
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

std::string Fixture() { return moemesh::testing::FixtureDir(); }
const json& Goldens() { return moemesh::testing::TinyR1Goldens(); }

std::string IdList(const json& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + std::to_string(id.get<int>());
  return out;
}

TEST(GenerateCliTest, OnePromptPrintsOneObjectWithGoldenGreedyTokens) {
  const json& prompt = Goldens()["results"][0];
  CommandResult result = RunMoemesh("generate --model " + Fixture() + " --prompt-ids " +
                             IdList(prompt["ids"]) + " --max-new-tokens 24 --ignore-eos --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  json output = json::parse(result.output);
  ASSERT_TRUE(output.is_object());
  EXPECT_EQ(output["prompt_ids"], prompt["ids"]);
  EXPECT_EQ(output["generated_ids"], prompt["greedy"]);
  ASSERT_EQ(output["prefill_top"].size(), 20u);
  EXPECT_EQ(output["prefill_top"][0][0], prompt["prefill_top"][0][0]);
  EXPECT_NEAR(output["prefill_top"][0][1].get<double>(), prompt["prefill_top"][0][1].get<double>(),
              1e-3);
}

TEST(GenerateCliTest, SeveralPromptsRunAsOneBatchAndPrintAnArray) {
  const json& first = Goldens()["results"][1];
  const json& second = Goldens()["results"][4];
  CommandResult result = RunMoemesh("generate --model " + Fixture() + " --prompt-ids " +
                             IdList(first["ids"]) + " --prompt-ids " + IdList(second["ids"]) +
                             " --max-new-tokens 5 --ignore-eos --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  json output = json::parse(result.output);
  ASSERT_TRUE(output.is_array());
  ASSERT_EQ(output.size(), 2u);
  EXPECT_EQ(output[0]["prompt_ids"], first["ids"]);
  EXPECT_EQ(output[1]["prompt_ids"], second["ids"]);
  for (int i = 0; i < 2; ++i) {
    const json& golden = i == 0 ? first : second;
    EXPECT_EQ(output[i]["generated_ids"],
              json(std::vector<int>(golden["greedy"].begin(), golden["greedy"].begin() + 5)));
  }
}

TEST(GenerateCliTest, SameSeedSameSample) {
  const std::string arguments = "generate --model " + Fixture() +
                                " --prompt-ids 0,128803,19923 --max-new-tokens 8 --ignore-eos"
                                " --temperature 1.0 --top-p 0.9 --top-k 50 --json --seed ";
  CommandResult first = RunMoemesh(arguments + "42");
  CommandResult again = RunMoemesh(arguments + "42");
  CommandResult other = RunMoemesh(arguments + "7");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_EQ(json::parse(first.output)["generated_ids"], json::parse(again.output)["generated_ids"]);
  EXPECT_NE(json::parse(first.output)["generated_ids"], json::parse(other.output)["generated_ids"]);
}

TEST(GenerateCliTest, BadInputGetsAClearMessage) {
  CommandResult no_model = RunMoemesh("generate --prompt-ids 1,2");
  EXPECT_EQ(no_model.exit_code, 2);
  EXPECT_NE(no_model.output.find("--model"), std::string::npos);
  CommandResult bad_id = RunMoemesh("generate --model " + Fixture() + " --prompt-ids 1,x");
  EXPECT_EQ(bad_id.exit_code, 2);
  EXPECT_NE(bad_id.output.find("'x' is not a token id"), std::string::npos);
  CommandResult out_of_vocab = RunMoemesh("generate --model " + Fixture() + " --prompt-ids 999999");
  EXPECT_EQ(out_of_vocab.exit_code, 1);
  EXPECT_NE(out_of_vocab.output.find("token id 999999"), std::string::npos);
  CommandResult bad_temperature =
      RunMoemesh("generate --model " + Fixture() + " --prompt-ids 1 --temperature -1");
  EXPECT_NE(bad_temperature.exit_code, 0);
  EXPECT_NE(bad_temperature.output.find("temperature"), std::string::npos);
  CommandResult missing = RunMoemesh("generate --model /nonexistent --prompt-ids 1");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("/nonexistent"), std::string::npos);
}

}  // namespace
