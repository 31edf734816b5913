// `moemesh render-chat` over every template and case of goldens/chat_templates/: the prompt on
// stdout byte for byte (no newline added), or a non-zero exit with the error on stderr where
// jinja2 raises. Runs the real binary.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using Json = nlohmann::ordered_json;
const std::string kGoldens = MOEMESH_SHARED_DIR "/goldens/chat_templates/";
const std::string kFixture = MOEMESH_SHARED_DIR "/fixtures/tiny-r1";

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct Result {
  int exit_code;
  std::string out, err;
};

Result RenderChat(const std::string& stdin_text, const std::string& flags) {
  // Unique per process: ctest runs each test case as its own process, in parallel.
  const std::string dir = ::testing::TempDir() + "/render_chat_" + std::to_string(::getpid());
  const std::string in = dir + ".in.json", out = dir + ".out", err = dir + ".err";
  std::ofstream(in, std::ios::binary) << stdin_text;
  const std::string command = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh render-chat " +
                              flags + " < " + in + " > " + out + " 2> " + err;
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadText(out), ReadText(err)};
}

TEST(RenderChatCliTest, EveryGoldenTemplateAndCase) {
  const Json cases = Json::parse(ReadText(kGoldens + "cases.json"));
  const Json expected = Json::parse(ReadText(kGoldens + "expected.json"));
  int checked = 0;
  for (const auto& [name, by_case] : expected.items()) {
    const std::string flags =
        "--tokenizer " + kFixture + " --chat-template " + kGoldens + "templates/" + name + ".jinja";
    for (const Json& test_case : cases) {
      Json request = {{"messages", test_case["messages"]},
                      {"add_generation_prompt", test_case["add_generation_prompt"]}};
      if (test_case.contains("tools")) request["tools"] = test_case["tools"];
      if (test_case.contains("extra_vars")) request["chat_template_kwargs"] = test_case["extra_vars"];
      const std::string label = name + "/" + test_case["name"].get<std::string>();
      const Json& golden = by_case[test_case["name"].get<std::string>()];
      const Result result = RenderChat(request.dump(), flags);
      if (golden.is_object()) {
        EXPECT_NE(result.exit_code, 0) << label << " should fail: " << golden["error"];
        EXPECT_NE(result.err.find("render-chat: "), std::string::npos) << label;
      } else {
        EXPECT_EQ(result.exit_code, 0) << label << ": " << result.err;
        EXPECT_EQ(result.out, golden.get<std::string>()) << label;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 72);
}

TEST(RenderChatCliTest, BareArrayAndTheCheckpointsOwnTemplate) {
  const Result result =
      RenderChat(R"([{"role": "user", "content": "Hi"}])", "--tokenizer " + kFixture);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n");
  const Result no_prompt = RenderChat(R"([{"role": "user", "content": "Hi"}])",
                                      "--tokenizer " + kFixture + " --no-generation-prompt");
  EXPECT_EQ(no_prompt.out, "<｜begin▁of▁sentence｜><｜User｜>Hi");
  EXPECT_NE(RenderChat("not json", "--tokenizer " + kFixture).exit_code, 0);
  EXPECT_NE(RenderChat("[]", "--tokenizer " + kFixture + " --chat-template /nonexistent").exit_code, 0);
}

TEST(RenderChatCliTest, ShippedToolTemplateWritesTools) {
  const std::string tools = R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object"}}}])";
  const Result result = RenderChat(
      R"({"messages": [{"role": "user", "content": "Weather?"}], "tools": )" + tools + "}",
      "--tokenizer " + kFixture + " --chat-template " MOEMESH_SOURCE_DIR
      "/deploy/templates/deepseek-r1-tools.jinja");
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("get_weather"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("Weather of a city"), std::string::npos);
}

}  // namespace
