// DeepSeek-V3/R1 tool-call markup -> OpenAI tool_calls.
//
// The models write (the chat template renders history the same way):
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
//   <｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>
// A block is accepted only when every call in it has a type, a name and ARGS that parse as a JSON
// object (the ```json fence is optional); otherwise the whole block, markers included, is returned
// as ordinary text. A block the output ends inside (no <｜tool▁calls▁end｜>) is parsed as it
// stands.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moemesh::text {

inline constexpr std::string_view kToolCallsBeginMarker = "<｜tool▁calls▁begin｜>";
inline constexpr std::string_view kToolCallsEndMarker = "<｜tool▁calls▁end｜>";
inline constexpr std::string_view kToolCallBeginMarker = "<｜tool▁call▁begin｜>";
inline constexpr std::string_view kToolCallEndMarker = "<｜tool▁call▁end｜>";
inline constexpr std::string_view kToolSepMarker = "<｜tool▁sep｜>";

// One parsed call, as OpenAI's `tool_calls[i]`.
struct ToolCall {
  int index = 0;          // position among the sequence's calls (0, 1, ...)
  std::string id;         // id prefix + index, e.g. "call_0"
  std::string type;       // "function"
  std::string name;       // function.name
  std::string arguments;  // function.arguments: the JSON object text as the model wrote it
  bool operator==(const ToolCall&) const = default;
};

// The calls of one block's inside (between the begin and end markers), or nullopt when malformed.
// Calls get index 0, 1, ... and no id.
std::optional<std::vector<ToolCall>> ParseToolCallBlock(std::string_view block);

// Answer text with its tool-call blocks taken out.
struct ToolCallSplit {
  std::string content;               // the text outside well-formed blocks
  std::vector<ToolCall> tool_calls;  // calls of well-formed blocks, ids assigned
};

// Whole-answer parse; ids are `id_prefix` + index.
ToolCallSplit ParseToolCalls(std::string_view answer, std::string_view id_prefix);

// Streaming form of ParseToolCalls for one sequence: text before a block is released at once (a
// possible partial begin marker held back); a block is held until its end marker or Finish(),
// then released as calls or, when malformed, as text. Joined results equal ParseToolCalls.
class ToolCallParser {
 public:
  explicit ToolCallParser(std::string id_prefix);

  ToolCallSplit Add(std::string_view text);
  ToolCallSplit Finish();
  int calls_parsed() const { return next_index_; }

 private:
  // Closes the held block (its inside in held_): appends calls or text to `split`.
  void CloseBlock(std::string_view inside, bool has_end_marker, ToolCallSplit* split);

  std::string id_prefix_;
  std::string held_;
  bool in_block_ = false;
  int next_index_ = 0;
};

}  // namespace moemesh::text
