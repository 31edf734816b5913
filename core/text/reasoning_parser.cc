#include "core/text/reasoning_parser.h"

#include <algorithm>

namespace moemesh::text {

ReasoningSplit SplitReasoning(std::string_view output, bool starts_in_reasoning) {
  if (!starts_in_reasoning) {
    if (output.substr(0, kThinkStart.size()) != kThinkStart) return {"", std::string(output)};
    output.remove_prefix(kThinkStart.size());
  }
  const size_t end = output.find(kThinkEnd);
  if (end == std::string_view::npos) return {std::string(output), ""};
  return {std::string(output.substr(0, end)), std::string(output.substr(end + kThinkEnd.size()))};
}

ReasoningParser::ReasoningParser(bool starts_in_reasoning)
    : state_(starts_in_reasoning ? State::kReasoning : State::kMayOpen) {}

ReasoningSplit ReasoningParser::Add(std::string_view text) {
  ReasoningSplit split;
  held_ += text;
  if (state_ == State::kMayOpen) {
    const size_t compared = std::min(held_.size(), kThinkStart.size());
    if (std::string_view(held_).substr(0, compared) != kThinkStart.substr(0, compared)) {
      state_ = State::kContent;
    } else if (held_.size() < kThinkStart.size()) {
      return split;  // still could be "<think>"
    } else {
      held_.erase(0, kThinkStart.size());
      state_ = State::kReasoning;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t end = held_.find(kThinkEnd);
    if (end == std::string::npos) {
      // Hold back the longest suffix that could begin "</think>".
      size_t keep = std::min(held_.size(), kThinkEnd.size() - 1);
      while (keep > 0 &&
             std::string_view(held_).substr(held_.size() - keep) != kThinkEnd.substr(0, keep)) {
        --keep;
      }
      split.reasoning = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return split;
    }
    split.reasoning = held_.substr(0, end);
    held_.erase(0, end + kThinkEnd.size());
    state_ = State::kContent;
  }
  split.content = std::move(held_);
  held_.clear();
  return split;
}

ReasoningSplit ReasoningParser::Finish() {
  ReasoningSplit split;
  if (state_ == State::kReasoning) {
    split.reasoning = std::move(held_);
  } else {
    split.content = std::move(held_);  // a partial "<think>" that never completed is content
  }
  held_.clear();
  return split;
}

}  // namespace moemesh::text
