#include "core/text/output_processor.h"

#include <algorithm>

namespace moemesh::text {
namespace {

bool IsStopToken(const OutputOptions& options, TokenId id) {
  return std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), id) !=
         options.stop_token_ids.end();
}

// Appends text of one kind, merging with the previous delta when it is of the same kind.
void AppendReasoning(std::string text, std::vector<OutputDelta>* deltas) {
  if (text.empty()) return;
  if (!deltas->empty() && !deltas->back().reasoning_content.empty()) {
    deltas->back().reasoning_content += text;
  } else {
    OutputDelta delta;
    delta.reasoning_content = std::move(text);
    deltas->push_back(std::move(delta));
  }
}

void AppendContent(std::string text, std::vector<OutputDelta>* deltas) {
  if (text.empty()) return;
  if (!deltas->empty() && !deltas->back().content.empty()) {
    deltas->back().content += text;
  } else {
    OutputDelta delta;
    delta.content = std::move(text);
    deltas->push_back(std::move(delta));
  }
}

void AppendToolCalls(std::vector<ToolCall> calls, std::vector<OutputDelta>* deltas) {
  if (calls.empty()) return;
  if (!deltas->empty() && !deltas->back().tool_calls.empty()) {
    for (ToolCall& call : calls) deltas->back().tool_calls.push_back(std::move(call));
  } else {
    OutputDelta delta;
    delta.tool_calls = std::move(calls);
    deltas->push_back(std::move(delta));
  }
}

}  // namespace

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kToolCalls:
      return "tool_calls";
    case FinishReason::kNone:
      break;
  }
  return "";
}

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, OutputOptions options)
    : options_(std::move(options)),
      detokenizer_(tokenizer, options_.skip_special_tokens),
      reasoning_(options_.starts_in_reasoning),  // unused unless parse_reasoning
      stop_strings_(options_.stop_strings),
      tool_calls_(options_.tool_call_id_prefix) {}

std::vector<OutputDelta> OutputProcessor::Add(std::span<const TokenId> ids) {
  std::vector<OutputDelta> deltas;
  if (finished()) return deltas;
  std::string text;
  bool stop_token = false;
  for (TokenId id : ids) {
    if (IsStopToken(options_, id)) {
      stop_token = true;
      break;
    }
    text += detokenizer_.Add(id);
  }
  if (stop_token) text += detokenizer_.Finish();
  Process(std::move(text), /*final=*/stop_token, &deltas);
  if (stop_token || stop_strings_.stopped()) {
    finish_reason_ =
        tool_calls_.calls_parsed() > 0 ? FinishReason::kToolCalls : FinishReason::kStop;
  }
  return deltas;
}

std::vector<OutputDelta> OutputProcessor::Finish() {
  std::vector<OutputDelta> deltas;
  if (finished()) return deltas;
  Process(detokenizer_.Finish(), /*final=*/true, &deltas);
  if (stop_strings_.stopped()) {
    finish_reason_ =
        tool_calls_.calls_parsed() > 0 ? FinishReason::kToolCalls : FinishReason::kStop;
  } else {
    finish_reason_ = FinishReason::kLength;
  }
  return deltas;
}

void OutputProcessor::Process(std::string text, bool final, std::vector<OutputDelta>* deltas) {
  std::string answer;
  if (options_.parse_reasoning) {
    ReasoningSplit split = reasoning_.Add(text);
    if (final) {
      ReasoningSplit rest = reasoning_.Finish();
      split.reasoning += rest.reasoning;
      split.content += rest.content;
    }
    AppendReasoning(std::move(split.reasoning), deltas);
    answer = std::move(split.content);
  } else {
    answer = std::move(text);
  }
  std::string released = stop_strings_.Add(answer);
  if (final || stop_strings_.stopped()) released += stop_strings_.Finish();
  const bool flush = final || stop_strings_.stopped();
  if (!options_.parse_tool_calls) {
    AppendContent(std::move(released), deltas);
    return;
  }
  ToolCallSplit split = tool_calls_.Add(released);
  if (flush) {
    ToolCallSplit rest = tool_calls_.Finish();
    split.content += rest.content;
    for (ToolCall& call : rest.tool_calls) split.tool_calls.push_back(std::move(call));
  }
  AppendContent(std::move(split.content), deltas);
  AppendToolCalls(std::move(split.tool_calls), deltas);
}

CompletedOutput ProcessCompletedOutput(const Tokenizer& tokenizer, const OutputOptions& options,
                                       std::span<const TokenId> ids) {
  CompletedOutput output;
  bool stopped = false;
  size_t end = 0;
  while (end < ids.size() && !IsStopToken(options, ids[end])) ++end;
  if (end < ids.size()) stopped = true;
  const std::string text = tokenizer.Decode(ids.subspan(0, end), options.skip_special_tokens);

  std::string answer = text;
  if (options.parse_reasoning) {
    ReasoningSplit split = SplitReasoning(text, options.starts_in_reasoning);
    output.reasoning_content = std::move(split.reasoning);
    answer = std::move(split.content);
  }
  if (std::optional<StopMatch> match = FindStopString(answer, options.stop_strings)) {
    answer.resize(match->position);
    stopped = true;
  }
  if (options.parse_tool_calls) {
    ToolCallSplit split = ParseToolCalls(answer, options.tool_call_id_prefix);
    output.content = std::move(split.content);
    output.tool_calls = std::move(split.tool_calls);
  } else {
    output.content = std::move(answer);
  }
  output.finish_reason = !stopped                    ? FinishReason::kLength
                         : output.tool_calls.empty() ? FinishReason::kStop
                                                     : FinishReason::kToolCalls;
  return output;
}

CompletedOutput JoinDeltas(const std::vector<OutputDelta>& deltas, FinishReason finish_reason) {
  CompletedOutput output;
  for (const OutputDelta& delta : deltas) {
    output.reasoning_content += delta.reasoning_content;
    output.content += delta.content;
    output.tool_calls.insert(output.tool_calls.end(), delta.tool_calls.begin(),
                             delta.tool_calls.end());
  }
  output.finish_reason = finish_reason;
  return output;
}

}  // namespace moemesh::text
