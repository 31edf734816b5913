// Chat templates against the shared goldens: the four real DeepSeek templates x 18 conversations
// rendered by Python jinja2 as transformers does (goldens/chat_templates/), and the fixture's own
// R1 template against goldens/chat_template.json, all through the one Jinja rendering path.
#include "core/text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace moemesh::text {
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

Json ReadJson(const std::string& path) { return Json::parse(ReadText(path)); }

ChatInput InputOf(const Json& test_case) {
  ChatInput input;
  input.messages = test_case["messages"];
  input.tools = test_case.contains("tools") ? test_case["tools"] : Json();
  input.add_generation_prompt = test_case["add_generation_prompt"].get<bool>();
  if (test_case.contains("extra_vars")) input.kwargs = test_case["extra_vars"];
  return input;
}

TEST(ChatTemplateTest, EveryGoldenTemplateAndCaseRendersExactly) {
  const Json cases = ReadJson(kGoldens + "cases.json");
  const Json expected = ReadJson(kGoldens + "expected.json");
  int checked = 0, errors = 0;
  for (const auto& [name, by_case] : expected.items()) {
    absl::StatusOr<ChatTemplate> chat_template = LoadChatTemplate(
        kFixture, kGoldens + "templates/" + name + ".jinja");
    ASSERT_TRUE(chat_template.ok()) << name << ": " << chat_template.status();
    for (const Json& test_case : cases) {
      const std::string case_name = test_case["name"].get<std::string>();
      const Json& golden = by_case[case_name];
      absl::StatusOr<std::string> prompt = RenderChat(*chat_template, InputOf(test_case));
      if (golden.is_object()) {
        EXPECT_FALSE(prompt.ok()) << name << "/" << case_name << " should fail like jinja2: "
                                  << golden["error"];
        ++errors;
      } else {
        ASSERT_TRUE(prompt.ok()) << name << "/" << case_name << ": " << prompt.status();
        EXPECT_EQ(*prompt, golden.get<std::string>()) << name << "/" << case_name;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 72);
  EXPECT_EQ(errors, 9);
}

TEST(ChatTemplateTest, FixtureTemplateRendersTheR1Goldens) {
  absl::StatusOr<ChatTemplate> chat_template = LoadChatTemplate(kFixture);
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  EXPECT_EQ(chat_template->bos_token, "<｜begin▁of▁sentence｜>");
  EXPECT_TRUE(chat_template->handles_reasoning);
  const Json goldens = ReadJson(MOEMESH_SHARED_DIR "/goldens/chat_template.json");
  int checked = 0;
  for (const Json& test_case : goldens["cases"]) {
    ChatInput input;
    input.messages = test_case["messages"];
    input.add_generation_prompt = test_case["add_generation_prompt"].get<bool>();
    absl::StatusOr<std::string> prompt = RenderChat(*chat_template, input);
    ASSERT_TRUE(prompt.ok()) << test_case["name"] << ": " << prompt.status();
    EXPECT_EQ(*prompt, test_case["deepseek-r1"].get<std::string>()) << test_case["name"];
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(ChatTemplateTest, NamedTemplateListPicksDefaultAndToolUse) {
  const std::string dir = ::testing::TempDir() + "/named_templates";
  std::filesystem::create_directories(dir);
  Json config = {{"bos_token", {{"content", "<s>"}}},
                 {"eos_token", "</s>"},
                 {"chat_template",
                  Json::array({{{"name", "default"}, {"template", "D{{ bos_token }}{{ eos_token }}"}},
                               {{"name", "tool_use"}, {"template", "T{{ tools | length }}"}}})}};
  std::ofstream(dir + "/tokenizer_config.json") << config.dump();
  absl::StatusOr<ChatTemplate> chat_template = LoadChatTemplate(dir);
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  ChatInput input;
  EXPECT_EQ(*RenderChat(*chat_template, input), "D<s></s>");
  input.tools = Json::array({Json::object(), Json::object()});
  EXPECT_EQ(*RenderChat(*chat_template, input), "T2");
}

TEST(ChatTemplateTest, KwargsReachTheTemplateButNotReservedNames) {
  absl::StatusOr<ChatTemplate> chat_template =
      CompileChatTemplate("{{ thinking }}|{{ bos_token }}", "<b>", "<e>");
  ASSERT_TRUE(chat_template.ok());
  ChatInput input;
  input.kwargs = {{"thinking", true}};
  EXPECT_EQ(*RenderChat(*chat_template, input), "True|<b>");
  input.kwargs = {{"messages", 1}};
  EXPECT_EQ(RenderChat(*chat_template, input).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, ErrorsNameTheTemplateLine) {
  absl::StatusOr<ChatTemplate> bad = CompileChatTemplate("a\n{% if x %}\n{% endfor %}", "", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 3"), std::string::npos) << bad.status();
  absl::StatusOr<ChatTemplate> raising =
      CompileChatTemplate("x\n\n{{ raise_exception('Conversation roles must alternate') }}", "", "");
  ASSERT_TRUE(raising.ok());
  absl::Status status = RenderChat(*raising, ChatInput()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("line 3"), std::string::npos) << status;
  EXPECT_NE(status.message().find("Conversation roles must alternate"), std::string::npos);
}

TEST(ChatTemplateTest, MissingTemplateIsAnError) {
  EXPECT_EQ(LoadChatTemplate(kFixture, "/nonexistent.jinja").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadChatTemplate("/nonexistent-dir").status().code(), absl::StatusCode::kNotFound);
}

TEST(ChatTemplateTest, PromptEndsInReasoning) {
  EXPECT_TRUE(PromptEndsInReasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
  EXPECT_FALSE(PromptEndsInReasoning("<｜User｜>hi<｜Assistant｜>"));
  EXPECT_FALSE(PromptEndsInReasoning("<think>a</think>b"));
  EXPECT_FALSE(PromptEndsInReasoning("<｜Assistant｜></think>"));
}

}  // namespace
}  // namespace moemesh::text
