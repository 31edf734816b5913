#include "core/text/tool_call_parser.h"

#include "nlohmann/json.hpp"

namespace moemesh::text {
namespace {

std::string_view Trim(std::string_view text) {
  const auto is_space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

bool ConsumePrefix(std::string_view* text, std::string_view prefix) {
  if (text->substr(0, prefix.size()) != prefix) return false;
  text->remove_prefix(prefix.size());
  return true;
}

// Appends the calls of a closed block (or its raw text when malformed) and numbers them.
void AppendBlock(std::string_view inside, bool has_end_marker, std::string_view id_prefix,
                 int* next_index, ToolCallSplit* split) {
  std::optional<std::vector<ToolCall>> calls = ParseToolCallBlock(inside);
  if (!calls) {
    split->content += kToolCallsBeginMarker;
    split->content += inside;
    if (has_end_marker) split->content += kToolCallsEndMarker;
    return;
  }
  for (ToolCall& call : *calls) {
    call.index = (*next_index)++;
    call.id = std::string(id_prefix) + std::to_string(call.index);
    split->tool_calls.push_back(std::move(call));
  }
}

}  // namespace

std::optional<std::vector<ToolCall>> ParseToolCallBlock(std::string_view block) {
  std::vector<ToolCall> calls;
  std::string_view rest = block;
  while (true) {
    rest = Trim(rest);
    if (rest.empty()) break;
    if (!ConsumePrefix(&rest, kToolCallBeginMarker)) return std::nullopt;
    const size_t separator = rest.find(kToolSepMarker);
    const size_t end = rest.find(kToolCallEndMarker);
    if (separator == std::string_view::npos || end == std::string_view::npos || end < separator) {
      return std::nullopt;
    }
    ToolCall call;
    call.type = std::string(Trim(rest.substr(0, separator)));
    std::string_view body =
        rest.substr(separator + kToolSepMarker.size(), end - separator - kToolSepMarker.size());
    rest.remove_prefix(end + kToolCallEndMarker.size());
    // NAME, newline, then ARGS optionally fenced as ```json ... ```.
    const size_t newline = body.find('\n');
    call.name = std::string(Trim(body.substr(0, newline)));
    std::string_view arguments =
        newline == std::string_view::npos ? std::string_view() : Trim(body.substr(newline + 1));
    if (ConsumePrefix(&arguments, "```")) {
      ConsumePrefix(&arguments, "json");
      if (arguments.size() < 3 || arguments.substr(arguments.size() - 3) != "```") {
        return std::nullopt;
      }
      arguments = Trim(arguments.substr(0, arguments.size() - 3));
    }
    if (call.type.empty() || call.name.empty() ||
        call.name.find_first_of(" \t<>") != std::string::npos) {
      return std::nullopt;
    }
    const nlohmann::json parsed = nlohmann::json::parse(arguments.begin(), arguments.end(), nullptr,
                                                        /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
    call.arguments = std::string(arguments);
    calls.push_back(std::move(call));
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

ToolCallSplit ParseToolCalls(std::string_view answer, std::string_view id_prefix) {
  ToolCallSplit split;
  int next_index = 0;
  while (true) {
    const size_t begin = answer.find(kToolCallsBeginMarker);
    if (begin == std::string_view::npos) break;
    split.content += answer.substr(0, begin);
    answer.remove_prefix(begin + kToolCallsBeginMarker.size());
    const size_t end = answer.find(kToolCallsEndMarker);
    const bool has_end_marker = end != std::string_view::npos;
    AppendBlock(answer.substr(0, end), has_end_marker, id_prefix, &next_index, &split);
    answer.remove_prefix(has_end_marker ? end + kToolCallsEndMarker.size() : answer.size());
  }
  split.content += answer;
  return split;
}

ToolCallParser::ToolCallParser(std::string id_prefix) : id_prefix_(std::move(id_prefix)) {}

void ToolCallParser::CloseBlock(std::string_view inside, bool has_end_marker,
                                ToolCallSplit* split) {
  AppendBlock(inside, has_end_marker, id_prefix_, &next_index_, split);
}

ToolCallSplit ToolCallParser::Add(std::string_view text) {
  ToolCallSplit split;
  held_ += text;
  while (true) {
    if (in_block_) {
      const size_t end = held_.find(kToolCallsEndMarker);
      if (end == std::string::npos) return split;
      CloseBlock(std::string_view(held_).substr(0, end), /*has_end_marker=*/true, &split);
      held_.erase(0, end + kToolCallsEndMarker.size());
      in_block_ = false;
      continue;
    }
    const size_t begin = held_.find(kToolCallsBeginMarker);
    if (begin == std::string::npos) {
      // Hold back the longest suffix that could begin the marker.
      size_t keep = std::min(held_.size(), kToolCallsBeginMarker.size() - 1);
      while (keep > 0 && std::string_view(held_).substr(held_.size() - keep) !=
                             kToolCallsBeginMarker.substr(0, keep)) {
        --keep;
      }
      split.content += held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return split;
    }
    split.content += held_.substr(0, begin);
    held_.erase(0, begin + kToolCallsBeginMarker.size());
    in_block_ = true;
  }
}

ToolCallSplit ToolCallParser::Finish() {
  ToolCallSplit split;
  if (in_block_) {
    CloseBlock(held_, /*has_end_marker=*/false, &split);
    in_block_ = false;
  } else {
    split.content = held_;
  }
  held_.clear();
  return split;
}

}  // namespace moemesh::text
