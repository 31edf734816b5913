// Generated token ids -> OpenAI response fields, per sequence, streaming or not.
//
// Pipeline (the same for both paths): stop token ids end the sequence -> incremental
// detokenizer (whole UTF-8 only) -> reasoning parser (R1: `reasoning_content` vs `content` at
// "</think>") -> stop strings, applied to the answer only -> tool-call parser (answer ->
// `content` + `tool_calls`). Joined streamed deltas equal the non-streamed result.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/text/incremental_detokenizer.h"
#include "core/text/reasoning_parser.h"
#include "core/text/stop_strings.h"
#include "core/text/tokenizer.h"
#include "core/text/tool_call_parser.h"

namespace moemesh::text {

// How one request's output is interpreted (built by the router from the request and the model).
struct OutputOptions {
  // DeepSeek-R1 family: split reasoning at "</think>".
  bool parse_reasoning = false;
  // The rendered prompt ends inside <think> (PromptEndsInReasoning(prompt)); R1's generation
  // prompt does, so its output starts in reasoning.
  bool starts_in_reasoning = false;
  // The request offered tools: parse <｜tool▁calls▁begin｜> blocks into tool_calls.
  bool parse_tool_calls = false;
  // OpenAI `stop`: matched in the answer only (never inside reasoning); the match and what
  // follows are dropped.
  std::vector<std::string> stop_strings;
  // Ids that end the sequence and are not shown: EOS (<｜end▁of▁sentence｜> = 1) and any others.
  std::vector<TokenId> stop_token_ids = {1};
  // Drop added tokens marked special (BOS, padding, placeholders) from the text.
  bool skip_special_tokens = true;
  // Tool call ids are this prefix + the call's index; make it unique per request.
  std::string tool_call_id_prefix = "call_";
};

enum class FinishReason { kNone, kStop, kLength, kToolCalls };

// OpenAI's name: "stop", "length", "tool_calls"; "" for kNone.
std::string_view FinishReasonName(FinishReason reason);

// One streamed delta. Each carries exactly one kind of field, in output order, so that a chunk
// holding the end of reasoning and the start of the answer becomes two deltas.
struct OutputDelta {
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;
  bool operator==(const OutputDelta&) const = default;
};

// The whole output of a sequence (non-streaming response, or the join of all deltas).
struct CompletedOutput {
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;
  FinishReason finish_reason = FinishReason::kNone;
  bool operator==(const CompletedOutput&) const = default;
};

// Per-sequence streaming processor. Feed each step's generated ids with Add(); stop generating
// once finished() is true (a stop token or stop string was seen: the last Add already flushed
// everything). When generation ends for another reason (max_tokens or context length), call
// Finish(): it flushes held text and sets finish reason length.
class OutputProcessor {
 public:
  // `tokenizer` must outlive the processor.
  OutputProcessor(const Tokenizer& tokenizer, OutputOptions options);

  // Deltas produced by the ids of one step (one id, or several with multi-token prediction).
  // Ids after a stop token, or after finished(), are ignored.
  std::vector<OutputDelta> Add(std::span<const TokenId> ids);
  std::vector<OutputDelta> Add(TokenId id) { return Add(std::span<const TokenId>(&id, 1)); }

  // End of generation without a stop: flushes; finish reason length. No-op once finished().
  std::vector<OutputDelta> Finish();

  bool finished() const { return finish_reason_ != FinishReason::kNone; }
  // kStop, kToolCalls (stopped and at least one call parsed) or kLength; kNone until the end.
  FinishReason finish_reason() const { return finish_reason_; }

 private:
  // Runs detokenized `text` through reasoning, stop strings and tool calls; `final` flushes.
  void Process(std::string text, bool final, std::vector<OutputDelta>* deltas);

  OutputOptions options_;
  IncrementalDetokenizer detokenizer_;
  ReasoningParser reasoning_;
  StopStringMatcher stop_strings_;
  ToolCallParser tool_calls_;
  FinishReason finish_reason_ = FinishReason::kNone;
};

// Non-streaming path over all generated ids at once (same fields as joining the deltas):
// `ids` may end with or contain a stop token; without one, and without a stop string in the
// answer, the finish reason is length.
CompletedOutput ProcessCompletedOutput(const Tokenizer& tokenizer, const OutputOptions& options,
                                       std::span<const TokenId> ids);

// Joins streamed deltas (and a finish reason) into a CompletedOutput, e.g. for logging or tests.
CompletedOutput JoinDeltas(const std::vector<OutputDelta>& deltas, FinishReason finish_reason);

}  // namespace moemesh::text
