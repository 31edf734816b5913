// Chat templates against the shared goldens (rendered with Jinja2 from the real templates).
#include "core/text/chat_template.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace moemesh::text {
namespace {

using Json = nlohmann::json;

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return Json::parse(buffer.str());
}

TEST(ChatTemplateTest, GoldenCasesRenderExactlyForBothTemplates) {
  const Json goldens = ReadJson(MOEMESH_SHARED_DIR "/goldens/chat_template.json");
  ASSERT_FALSE(goldens["cases"].empty());
  for (const auto& [key, kind] : {std::pair{"deepseek-r1", ChatTemplateKind::kDeepSeekR1},
                                  std::pair{"deepseek-v3", ChatTemplateKind::kDeepSeekV3}}) {
    for (const Json& test_case : goldens["cases"]) {
      absl::StatusOr<std::string> prompt =
          RenderChat(ChatTemplate{kind}, test_case["messages"],
                     test_case["add_generation_prompt"].get<bool>());
      ASSERT_TRUE(prompt.ok()) << prompt.status();
      EXPECT_EQ(*prompt, test_case[key].get<std::string>()) << key << " " << test_case["name"];
    }
  }
}

TEST(ChatTemplateTest, FixtureConfigSelectsR1) {
  absl::StatusOr<ChatTemplate> chat_template =
      LoadChatTemplate(MOEMESH_SHARED_DIR "/fixtures/tiny-r1");
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  EXPECT_EQ(chat_template->kind, ChatTemplateKind::kDeepSeekR1);
  EXPECT_EQ(chat_template->bos_token, "<｜begin▁of▁sentence｜>");
}

TEST(ChatTemplateTest, DetectsV3AndRejectsOthers) {
  EXPECT_EQ(*DetectChatTemplate("{{'<｜User｜>' + c}}{{'<｜Assistant｜>'}}"),
            ChatTemplateKind::kDeepSeekV3);
  EXPECT_EQ(DetectChatTemplate("<|im_start|>user").status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(ChatTemplateTest, R1KeepsOnlyTextAfterLastThinkInHistory) {
  const Json messages = Json::parse(R"([
    {"role": "user", "content": "a"},
    {"role": "assistant", "content": "<think>x</think>y</think>z"}])");
  EXPECT_EQ(*RenderChat(ChatTemplate{ChatTemplateKind::kDeepSeekR1}, messages, false),
            "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜>z<｜end▁of▁sentence｜>");
}

TEST(ChatTemplateTest, AcceptsTextPartsAndObjectArguments) {
  const Json messages = Json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"k": 1}}}]}])");
  EXPECT_EQ(*RenderChat(ChatTemplate{ChatTemplateKind::kDeepSeekV3}, messages, false),
            "<｜begin▁of▁sentence｜><｜User｜>ab<｜Assistant｜><｜tool▁calls▁begin｜>"
            "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"k\":1}\n```"
            "<｜tool▁call▁end｜>");
}

TEST(ChatTemplateTest, BadMessagesAreInvalidArgument) {
  const ChatTemplate r1{ChatTemplateKind::kDeepSeekR1};
  EXPECT_EQ(RenderChat(r1, Json::object(), true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RenderChat(r1, Json::parse(R"([{"role": "user"}])"), true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RenderChat(r1, Json::parse(R"([{"role": "user", "content": 3}])"), true).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, PromptEndsInReasoning) {
  EXPECT_TRUE(PromptEndsInReasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
  EXPECT_FALSE(PromptEndsInReasoning("<｜User｜>hi<｜Assistant｜>"));
  EXPECT_FALSE(PromptEndsInReasoning("<think>a</think>b"));
}

}  // namespace
}  // namespace moemesh::text
