#include "core/text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/json_field.h"

namespace moemesh::text {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A special token in tokenizer_config.json: "text" or {"content": "text", ...}.
std::optional<std::string> TokenText(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ChatTemplate> CompileChatTemplate(std::string_view source, std::string bos_token,
                                                 std::string eos_token) {
  absl::StatusOr<std::shared_ptr<const jinja::Template>> compiled = jinja::Template::Parse(source);
  if (!compiled.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the chat template does not compile: ", compiled.status().message()));
  }
  ChatTemplate chat_template;
  chat_template.chat = *std::move(compiled);
  chat_template.source = std::string(source);
  chat_template.bos_token = std::move(bos_token);
  chat_template.eos_token = std::move(eos_token);
  chat_template.handles_reasoning = source.find("<think>") != std::string_view::npos ||
                                    source.find("</think>") != std::string_view::npos;
  return chat_template;
}

absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& tokenizer_path,
                                              const std::string& template_file) {
  std::string file = tokenizer_path;
  if (std::filesystem::is_directory(file)) file += "/tokenizer_config.json";
  absl::StatusOr<std::string> text = ReadFile(file);
  if (!text.ok()) return text.status();
  const Json config = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file, " is not a JSON object"));
  }
  const std::string bos = TokenText(config, "bos_token").value_or("<｜begin▁of▁sentence｜>");
  const std::string eos = TokenText(config, "eos_token").value_or("<｜end▁of▁sentence｜>");

  std::string source, tool_use_source;
  if (!template_file.empty()) {
    absl::StatusOr<std::string> override_text = ReadFile(template_file);
    if (!override_text.ok()) return override_text.status();
    source = *std::move(override_text);
  } else {
    const Json templates = config.value("chat_template", Json());
    if (templates.is_string()) {
      source = templates.get<std::string>();
    } else if (templates.is_array()) {
      for (const Json& entry : templates) {
        if (!entry.is_object() || !entry.value("template", Json()).is_string()) continue;
        const std::string name = FieldOr(entry, "name", std::string());
        if (name == "default") source = entry["template"].get<std::string>();
        if (name == "tool_use") tool_use_source = entry["template"].get<std::string>();
      }
    }
    if (source.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, " has no chat_template (give one with --chat-template FILE)"));
    }
  }
  absl::StatusOr<ChatTemplate> chat_template = CompileChatTemplate(source, bos, eos);
  if (!chat_template.ok()) return chat_template.status();
  if (!tool_use_source.empty()) {
    absl::StatusOr<std::shared_ptr<const jinja::Template>> tool_use =
        jinja::Template::Parse(tool_use_source);
    if (!tool_use.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the tool_use chat template does not compile: ", tool_use.status().message()));
    }
    chat_template->tool_use = *std::move(tool_use);
  }
  return chat_template;
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& chat_template, const ChatInput& input,
                                       const jinja::RenderOptions& options) {
  if (chat_template.chat == nullptr) return absl::FailedPreconditionError("no chat template loaded");
  if (!input.messages.is_array()) return absl::InvalidArgumentError("messages is not an array");
  if (!input.kwargs.is_null() && !input.kwargs.is_object()) {
    return absl::InvalidArgumentError("chat_template_kwargs must be an object");
  }
  Json variables = Json::object();
  variables["messages"] = input.messages;
  variables["tools"] = input.tools;
  variables["documents"] = nullptr;
  variables["add_generation_prompt"] = input.add_generation_prompt;
  variables["bos_token"] = chat_template.bos_token;
  variables["eos_token"] = chat_template.eos_token;
  if (input.kwargs.is_object()) {
    for (const auto& [name, value] : input.kwargs.items()) {
      if (name == "messages" || name == "tools" || name == "documents" ||
          name == "add_generation_prompt") {
        return absl::InvalidArgumentError(
            absl::StrCat("chat_template_kwargs may not set '", name, "'"));
      }
      variables[name] = value;
    }
  }
  const bool use_tool_template = chat_template.tool_use != nullptr && !input.tools.is_null();
  const jinja::Template& compiled = use_tool_template ? *chat_template.tool_use : *chat_template.chat;
  absl::StatusOr<std::string> prompt = compiled.Render(variables, options);
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the chat template failed: ", prompt.status().message()));
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
