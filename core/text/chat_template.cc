#include "core/text/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moemesh::text {
namespace {

using Json = nlohmann::json;

constexpr char kUser[] = "<｜User｜>";
constexpr char kAssistant[] = "<｜Assistant｜>";
constexpr char kEndOfSentence[] = "<｜end▁of▁sentence｜>";
constexpr char kToolCallsBegin[] = "<｜tool▁calls▁begin｜>";
constexpr char kToolCallsEnd[] = "<｜tool▁calls▁end｜>";
constexpr char kToolCallBegin[] = "<｜tool▁call▁begin｜>";
constexpr char kToolCallEnd[] = "<｜tool▁call▁end｜>";
constexpr char kToolSep[] = "<｜tool▁sep｜>";
constexpr char kToolOutputsBegin[] = "<｜tool▁outputs▁begin｜>";
constexpr char kToolOutputsEnd[] = "<｜tool▁outputs▁end｜>";
constexpr char kToolOutputBegin[] = "<｜tool▁output▁begin｜>";
constexpr char kToolOutputEnd[] = "<｜tool▁output▁end｜>";

// A message's content as text; nullopt when it is null or absent.
absl::StatusOr<std::optional<std::string>> ContentText(const Json& message, size_t index) {
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_array()) {
    std::string text;
    for (const Json& part : *it) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("message ", index, ": only text content parts are supported"));
      }
      text += part["text"].get<std::string>();
    }
    return std::optional<std::string>(std::move(text));
  }
  return absl::InvalidArgumentError(absl::StrCat("message ", index, ": content is not text"));
}

absl::StatusOr<std::string> RequiredContent(const Json& message, size_t index) {
  absl::StatusOr<std::optional<std::string>> content = ContentText(message, index);
  if (!content.ok()) return content.status();
  if (!content->has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("message ", index, " has no content"));
  }
  return **content;
}

// "<｜tool▁call▁begin｜>function<｜tool▁sep｜>name\n```json\nargs\n```<｜tool▁call▁end｜>"
absl::StatusOr<std::string> RenderToolCall(const Json& tool_call, size_t index) {
  const Json function = tool_call.is_object() ? tool_call.value("function", Json()) : Json();
  if (!function.is_object() || !function.value("name", Json()).is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("message ", index, ": tool call without function.name"));
  }
  const Json type = tool_call.value("type", Json("function"));
  const Json arguments = function.value("arguments", Json("{}"));
  if (!type.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("message ", index, ": tool call type"));
  }
  const std::string arguments_text =
      arguments.is_string() ? arguments.get<std::string>() : arguments.dump();
  return absl::StrCat(kToolCallBegin, type.get<std::string>(), kToolSep,
                      function["name"].get<std::string>(), "\n```json\n", arguments_text, "\n```",
                      kToolCallEnd);
}

}  // namespace

absl::StatusOr<ChatTemplateKind> DetectChatTemplate(std::string_view jinja_source) {
  // R1's generation prompt opens the reasoning block; V3's does not.
  if (jinja_source.find("<｜Assistant｜><think>") != std::string_view::npos) {
    return ChatTemplateKind::kDeepSeekR1;
  }
  if (jinja_source.find(kUser) != std::string_view::npos &&
      jinja_source.find(kAssistant) != std::string_view::npos) {
    return ChatTemplateKind::kDeepSeekV3;
  }
  return absl::UnimplementedError("chat_template is neither DeepSeek-V3's nor DeepSeek-R1's");
}

absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& path) {
  std::string file = path;
  if (std::ifstream(file + "/tokenizer_config.json").good()) file += "/tokenizer_config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in.good()) return absl::NotFoundError(absl::StrCat("cannot read ", file));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const Json config = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file, " is not a JSON object"));
  }
  // chat_template is a string, or a list of {name, template} where "default" is the chat one.
  std::string source;
  const Json templates = config.value("chat_template", Json());
  if (templates.is_string()) {
    source = templates.get<std::string>();
  } else if (templates.is_array()) {
    for (const Json& entry : templates) {
      if (entry.is_object() && entry.value("name", "") == "default" &&
          entry.value("template", Json()).is_string()) {
        source = entry["template"].get<std::string>();
      }
    }
  }
  if (source.empty())
    return absl::InvalidArgumentError(absl::StrCat(file, " has no chat_template"));
  absl::StatusOr<ChatTemplateKind> kind = DetectChatTemplate(source);
  if (!kind.ok()) return kind.status();
  ChatTemplate chat_template;
  chat_template.kind = *kind;
  const Json bos = config.value("bos_token", Json());
  if (bos.is_string()) chat_template.bos_token = bos.get<std::string>();
  if (bos.is_object() && bos.value("content", Json()).is_string()) {
    chat_template.bos_token = bos["content"].get<std::string>();
  }
  return chat_template;
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& chat_template, const Json& messages,
                                       bool add_generation_prompt) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages is not an array");
  const bool r1 = chat_template.kind == ChatTemplateKind::kDeepSeekR1;

  // The system prompt goes first: R1 keeps the last system message, V3 joins them with "\n\n".
  std::string system_prompt;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, " is not an object"));
    }
    if (messages[i].value("role", "") != "system") continue;
    absl::StatusOr<std::string> content = RequiredContent(messages[i], i);
    if (!content.ok()) return content.status();
    if (r1 || first_system) {
      system_prompt = *content;
    } else {
      absl::StrAppend(&system_prompt, "\n\n", *content);
    }
    first_system = false;
  }

  std::string prompt = absl::StrCat(chat_template.bos_token, system_prompt);
  // The templates' namespace variables; like them, is_first and is_output_first are never reset.
  bool is_first = false, is_tool = false, is_output_first = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& message = messages[i];
    const std::string role = message.value("role", "");
    if (role == "user") {
      is_tool = false;
      absl::StatusOr<std::string> content = RequiredContent(message, i);
      if (!content.ok()) return content.status();
      absl::StrAppend(&prompt, kUser, *content);
    } else if (role == "assistant") {
      absl::StatusOr<std::optional<std::string>> content = ContentText(message, i);
      if (!content.ok()) return content.status();
      if (!content->has_value()) {
        is_tool = false;
        const Json tool_calls = message.value("tool_calls", Json::array());
        if (!tool_calls.is_array()) {
          return absl::InvalidArgumentError(absl::StrCat("message ", i, ": tool_calls"));
        }
        for (const Json& tool_call : tool_calls) {
          absl::StatusOr<std::string> call = RenderToolCall(tool_call, i);
          if (!call.ok()) return call.status();
          if (!is_first) {
            absl::StrAppend(&prompt, kAssistant, kToolCallsBegin, *call);
            is_first = true;
          } else {
            absl::StrAppend(&prompt, "\n", *call, kToolCallsEnd, kEndOfSentence);
          }
        }
      } else if (is_tool) {
        absl::StrAppend(&prompt, kToolOutputsEnd, **content, kEndOfSentence);
        is_tool = false;
      } else {
        std::string_view text = **content;
        if (r1) {
          const size_t end_of_thinking = text.rfind("</think>");
          if (end_of_thinking != std::string_view::npos) {
            text = text.substr(end_of_thinking + std::string_view("</think>").size());
          }
        }
        absl::StrAppend(&prompt, kAssistant, std::string(text), kEndOfSentence);
      }
    } else if (role == "tool") {
      is_tool = true;
      absl::StatusOr<std::string> content = RequiredContent(message, i);
      if (!content.ok()) return content.status();
      if (is_output_first) {
        absl::StrAppend(&prompt, kToolOutputsBegin, kToolOutputBegin, *content, kToolOutputEnd);
        is_output_first = false;
      } else {
        absl::StrAppend(&prompt, "\n", kToolOutputBegin, *content, kToolOutputEnd);
      }
    }
  }
  if (is_tool) absl::StrAppend(&prompt, kToolOutputsEnd);
  if (add_generation_prompt && !is_tool) {
    absl::StrAppend(&prompt, kAssistant, r1 ? "<think>\n" : "");
  }
  return prompt;
}

bool PromptEndsInReasoning(std::string_view prompt) {
  const size_t open = prompt.rfind("<think>");
  if (open == std::string_view::npos) return false;
  const size_t close = prompt.rfind("</think>");
  return close == std::string_view::npos || close < open;
}

}  // namespace moemesh::text
