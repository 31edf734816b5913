// DeepSeek-V3 and DeepSeek-R1 chat templates, rendered in C++ exactly as their Jinja sources in
// tokenizer_config.json render them with Hugging Face transformers (the shared goldens are the
// spec). Which template applies is decided from the checkpoint's tokenizer_config.json.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moemesh::text {

enum class ChatTemplateKind {
  // DeepSeek-V3: system messages joined by "\n\n"; assistant history kept verbatim; the
  // generation prompt is "<｜Assistant｜>".
  kDeepSeekV3,
  // DeepSeek-R1: the last system message wins; assistant history keeps only the text after its
  // last "</think>"; the generation prompt is "<｜Assistant｜><think>\n".
  kDeepSeekR1,
};

// The template of one checkpoint and the BOS text it starts with.
struct ChatTemplate {
  ChatTemplateKind kind = ChatTemplateKind::kDeepSeekR1;
  std::string bos_token = "<｜begin▁of▁sentence｜>";
};

// Recognises the family from the Jinja source (`chat_template` in tokenizer_config.json).
// Unimplemented when it is neither DeepSeek-V3's nor DeepSeek-R1's.
absl::StatusOr<ChatTemplateKind> DetectChatTemplate(std::string_view jinja_source);

// Reads `path` (tokenizer_config.json, or a directory holding it): the template family and
// bos_token. NotFound / InvalidArgument / Unimplemented on a missing file, bad JSON, or an
// unknown template.
absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& path);

// Renders OpenAI-style `messages` (a JSON array of {role, content, tool_calls?}) into the prompt
// text. Roles: system, user, assistant (content, or content null with tool_calls), tool; other
// roles are skipped as the templates skip them. Beyond the Jinja templates, which would fail:
// a missing assistant content counts as null, content may be an array of {"type":"text"} parts
// (joined), tool-call arguments may be a JSON object (serialised), and a missing tool-call type is
// "function". InvalidArgument when messages is not an array of objects or a needed string is
// missing. The templates' quirks are kept (see ChatTemplateKind; a single tool call is not closed
// with <｜tool▁calls▁end｜>).
absl::StatusOr<std::string> RenderChat(const ChatTemplate& chat_template,
                                       const nlohmann::json& messages, bool add_generation_prompt);

// True when `prompt` leaves the model inside a reasoning block: its last "<think>" comes after
// its last "</think>" (an R1 generation prompt does). The reasoning parser starts from this.
bool PromptEndsInReasoning(std::string_view prompt);

}  // namespace moemesh::text
