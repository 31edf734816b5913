// libFuzzer target: the tool-call parser (and the reasoning / stop-string stages before it) on
// arbitrary text. Beyond "no crash": every chunking of the input gives the whole-text result,
// and a parsed block's arguments are a JSON object. The first input byte picks the chunk size.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/text/reasoning_parser.h"
#include "core/text/stop_strings.h"
#include "core/text/tool_call_parser.h"
#include "nlohmann/json.hpp"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 16;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace moemesh::text;

  // Tool calls.
  const ToolCallSplit whole = ParseToolCalls(text, "call_");
  ToolCallParser parser("call_");
  ToolCallSplit streamed;
  auto append = [&](ToolCallSplit part) {
    streamed.content += part.content;
    streamed.tool_calls.insert(streamed.tool_calls.end(), part.tool_calls.begin(),
                               part.tool_calls.end());
  };
  for (size_t i = 0; i < text.size(); i += chunk) append(parser.Add(text.substr(i, chunk)));
  append(parser.Finish());
  Check(streamed.content == whole.content, "streamed tool-call content == whole");
  Check(streamed.tool_calls == whole.tool_calls, "streamed tool calls == whole");
  for (const ToolCall& call : whole.tool_calls) {
    const auto arguments = nlohmann::json::parse(call.arguments, nullptr, false);
    Check(!arguments.is_discarded() && arguments.is_object(), "arguments are a JSON object");
    Check(!call.name.empty(), "calls have a name");
  }

  // Reasoning split.
  for (const bool starts_in_reasoning : {false, true}) {
    const ReasoningSplit expected = SplitReasoning(text, starts_in_reasoning);
    ReasoningParser reasoning(starts_in_reasoning);
    ReasoningSplit joined;
    for (size_t i = 0; i <= text.size(); i += chunk) {
      ReasoningSplit part = reasoning.Add(text.substr(i, chunk));
      joined.reasoning += part.reasoning;
      joined.content += part.content;
    }
    ReasoningSplit rest = reasoning.Finish();
    Check(joined.reasoning + rest.reasoning == expected.reasoning, "streamed reasoning == whole");
    Check(joined.content + rest.content == expected.content, "streamed content == whole");
  }

  // Stop strings.
  const std::vector<std::string> stops = {"</", "\n\n", "<｜tool▁calls▁end｜>", "aa"};
  const std::optional<StopMatch> match = FindStopString(text, stops);
  StopStringMatcher matcher(stops);
  std::string released;
  for (size_t i = 0; i < text.size() && !matcher.stopped(); i += chunk) {
    released += matcher.Add(text.substr(i, chunk));
  }
  released += matcher.Finish();
  Check(released == (match ? text.substr(0, match->position) : text), "streamed stop == whole");
  return 0;
}
