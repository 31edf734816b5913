// A checkpoint's chat template: its Jinja source from tokenizer_config.json (or a file that
// overrides it), compiled once with the Jinja engine (jinja_template.h) and rendered the way
// Hugging Face transformers' apply_chat_template renders it. This is the one path from OpenAI
// messages to prompt text: the router, `moemesh up` and `moemesh render-chat` all use it.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/text/jinja_template.h"
#include "nlohmann/json.hpp"

namespace moemesh::text {

// The compiled template(s) and the special tokens they are rendered with.
struct ChatTemplate {
  std::shared_ptr<const jinja::Template> chat;      // the default template
  std::shared_ptr<const jinja::Template> tool_use;  // a named "tool_use" template, or null
  std::string source;                               // the default template's text
  std::string bos_token = "<｜begin▁of▁sentence｜>";
  std::string eos_token = "<｜end▁of▁sentence｜>";
  // True when the template writes <think> / </think> itself (DeepSeek-R1, V3.1): the output is
  // then split into reasoning_content and content.
  bool handles_reasoning = false;
};

// Compiles `source` with the given special tokens. InvalidArgument (naming the line) on a
// template syntax error.
absl::StatusOr<ChatTemplate> CompileChatTemplate(std::string_view source, std::string bos_token,
                                                 std::string eos_token);

// Reads `tokenizer_path` (tokenizer_config.json, or a directory holding it): `chat_template`
// (a string, or a list of {name, template} with "default" and optionally "tool_use"),
// bos_token and eos_token (strings or {content}). When `template_file` is not empty its text is
// the template instead (vLLM's --chat-template). NotFound / InvalidArgument on a missing
// file, bad JSON, no template, or a template that does not compile.
absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& tokenizer_path,
                                              const std::string& template_file = "");

// What a template is rendered with. `messages` go to the template exactly as given (the
// caller decides any normalisation); `tools` null means no tools (the variable is none).
struct ChatInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null, or an OpenAI tool list
  bool add_generation_prompt = true;
  // Further variables (the request's chat_template_kwargs, e.g. {"thinking": true}); they may
  // override bos_token / eos_token but not messages, tools, documents or add_generation_prompt.
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
};

// Renders the prompt text. Variables: messages, tools, documents (none),
// add_generation_prompt, bos_token, eos_token, then kwargs. The "tool_use" template is used
// when tools are given and there is one (as transformers picks it). InvalidArgument with the
// template's error ("line N: TypeError: ..."), for raise_exception() too, or when kwargs is not
// an object or names a reserved variable.
absl::StatusOr<std::string> RenderChat(const ChatTemplate& chat_template, const ChatInput& input,
                                       const jinja::RenderOptions& options = {});

// True when `prompt` leaves the model inside a reasoning block: its last "<think>" comes after
// its last "</think>" (an R1 generation prompt does). The reasoning parser starts from this.
bool PromptEndsInReasoning(std::string_view prompt);

}  // namespace moemesh::text
