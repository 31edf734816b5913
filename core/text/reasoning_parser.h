// DeepSeek-R1 reasoning: splits model output into `reasoning_content` and `content` at
// "</think>".
#pragma once

#include <string>
#include <string_view>

namespace moemesh::text {

inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";

// Text of one chunk, or of a whole output, on each side of the reasoning boundary.
struct ReasoningSplit {
  std::string reasoning;  // before "</think>" (markers removed)
  std::string content;    // after it
};

// Whole-output split. `starts_in_reasoning`: the prompt ended inside <think> (see
// PromptEndsInReasoning). Otherwise an output that begins with "<think>" opens reasoning. Output
// that never closes its reasoning is all reasoning (content empty). Only the first "</think>"
// ends reasoning; later ones are content.
ReasoningSplit SplitReasoning(std::string_view output, bool starts_in_reasoning);

// Streaming form of SplitReasoning for one sequence: the joined results of Add() and Finish()
// equal SplitReasoning of the joined input, however the input is chunked. A possible partial
// "<think>" / "</think>" at the end of a chunk is held back until the next one decides it.
class ReasoningParser {
 public:
  explicit ReasoningParser(bool starts_in_reasoning);

  ReasoningSplit Add(std::string_view text);
  // End of output: held-back text goes to the side it was on.
  ReasoningSplit Finish();
  bool in_reasoning() const { return state_ == State::kReasoning; }

 private:
  enum class State { kMayOpen, kReasoning, kContent };
  State state_;
  std::string held_;
};

}  // namespace moemesh::text
