// The streaming text path: incremental detokenizer, reasoning, stop strings, tool calls and the
// OutputProcessor that combines them, each checked against its whole-text (non-streaming) form.
#include <random>

#include "core/text/incremental_detokenizer.h"
#include "core/text/output_processor.h"
#include "core/text/reasoning_parser.h"
#include "core/text/stop_strings.h"
#include "core/text/tokenizer.h"
#include "core/text/tool_call_parser.h"
#include "core/text/utf8.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1_tokenizer.h"

namespace moemesh::text {
namespace {}  // namespace

// Readable failure messages.
void PrintTo(const CompletedOutput& output, std::ostream* os) {
  *os << "{reasoning: \"" << output.reasoning_content << "\", content: \"" << output.content
      << "\", tool_calls: [";
  for (const ToolCall& call : output.tool_calls) {
    *os << "{" << call.index << " " << call.id << " " << call.name << " " << call.arguments << "}";
  }
  *os << "], finish: " << FinishReasonName(output.finish_reason) << "}";
}

namespace {

const Tokenizer& R1Tokenizer() { return testing::TinyR1Tokenizer(); }

// Id of the vocabulary token that is exactly one byte.
TokenId ByteToken(unsigned char byte) {
  static const std::vector<TokenId> ids = [] {
    std::vector<TokenId> table(256, -1);
    for (TokenId id = 0; id < R1Tokenizer().vocab_size(); ++id) {
      const std::string_view bytes = R1Tokenizer().TokenBytes(id);
      if (bytes.size() == 1 && !R1Tokenizer().IsSpecial(id) && table[(unsigned char)bytes[0]] < 0) {
        table[static_cast<unsigned char>(bytes[0])] = id;
      }
    }
    return table;
  }();
  return ids[byte];
}

constexpr TokenId kEos = 1;
constexpr TokenId kThinkEndId = 128799;

// Streams `ids` one step at a time (steps of `step` ids), then Finish() unless stopped.
CompletedOutput Stream(const OutputOptions& options, const std::vector<TokenId>& ids,
                       size_t step = 1, std::vector<OutputDelta>* all_deltas = nullptr) {
  OutputProcessor processor(R1Tokenizer(), options);
  std::vector<OutputDelta> deltas;
  for (size_t i = 0; i < ids.size() && !processor.finished(); i += step) {
    const size_t count = std::min(step, ids.size() - i);
    for (OutputDelta& delta : processor.Add(std::span<const TokenId>(ids.data() + i, count))) {
      deltas.push_back(std::move(delta));
    }
  }
  for (OutputDelta& delta : processor.Finish()) deltas.push_back(std::move(delta));
  for (const OutputDelta& delta : deltas) {
    const int kinds =
        !delta.reasoning_content.empty() + !delta.content.empty() + !delta.tool_calls.empty();
    EXPECT_EQ(kinds, 1) << "each delta carries exactly one field";
  }
  if (all_deltas != nullptr) *all_deltas = deltas;
  return JoinDeltas(deltas, processor.finish_reason());
}

std::vector<TokenId> Ids(std::string_view text) { return R1Tokenizer().Encode(text); }

std::vector<TokenId> Concat(std::vector<TokenId> a, const std::vector<TokenId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

OutputOptions R1Options() {
  OutputOptions options;
  options.parse_reasoning = true;
  options.starts_in_reasoning = true;
  options.parse_tool_calls = true;
  return options;
}

TEST(IncrementalDetokenizerTest, EmojiAndCjkSplitOverTokensAreNeverEmittedHalf) {
  const std::string text = "a🙂你好👨‍👩‍👧z";
  std::vector<TokenId> ids;  // one token per byte: every multi-byte character is split
  for (unsigned char byte : text) ids.push_back(ByteToken(byte));
  IncrementalDetokenizer detokenizer(R1Tokenizer(), /*skip_special_tokens=*/true);
  std::string joined;
  for (TokenId id : ids) {
    const std::string piece = detokenizer.Add(id);
    EXPECT_TRUE(IsValidUtf8(piece));
    EXPECT_EQ(piece.find(kReplacementCharacter), std::string::npos);
    joined += piece;
  }
  joined += detokenizer.Finish();
  EXPECT_EQ(joined, text);
}

TEST(IncrementalDetokenizerTest, RealTokenizationOfEmojiStreamsWholeCharacters) {
  const std::vector<TokenId> ids = Ids("emoji 🙂 and 🇫🇷 done");
  IncrementalDetokenizer detokenizer(R1Tokenizer(), true);
  std::string joined;
  int empty_steps = 0;
  for (TokenId id : ids) {
    const std::string piece = detokenizer.Add(id);
    EXPECT_TRUE(IsValidUtf8(piece));
    if (piece.empty()) ++empty_steps;
    joined += piece;
  }
  EXPECT_GT(empty_steps, 0) << "some token must end inside a character for this test to bite";
  EXPECT_EQ(joined + detokenizer.Finish(), "emoji 🙂 and 🇫🇷 done");
}

TEST(IncrementalDetokenizerTest, UnfinishedCharacterAtEndMatchesDecode) {
  const std::vector<TokenId> ids = {ByteToken('x'), ByteToken(0xF0), ByteToken(0x9F),
                                    ByteToken(0x41), ByteToken(0xE4)};
  IncrementalDetokenizer detokenizer(R1Tokenizer(), true);
  std::string joined;
  for (TokenId id : ids) joined += detokenizer.Add(id);
  joined += detokenizer.Finish();
  EXPECT_EQ(joined, R1Tokenizer().Decode(ids));
  EXPECT_EQ(joined,
            "x\xEF\xBF\xBD"
            "A\xEF\xBF\xBD");
}

TEST(ReasoningParserTest, EveryChunkingGivesTheWholeTextSplit) {
  for (const bool starts_in_reasoning : {true, false}) {
    for (const std::string text : {"<think>abc</think>def", "abc</think>def</think>", "abc</thi",
                                   "<thin", "<think>only reasoning", "plain answer", ""}) {
      const ReasoningSplit expected = SplitReasoning(text, starts_in_reasoning);
      for (size_t cut1 = 0; cut1 <= text.size(); ++cut1) {
        for (size_t cut2 = cut1; cut2 <= text.size(); ++cut2) {
          ReasoningParser parser(starts_in_reasoning);
          ReasoningSplit joined;
          for (const std::string_view chunk : {std::string_view(text).substr(0, cut1),
                                               std::string_view(text).substr(cut1, cut2 - cut1),
                                               std::string_view(text).substr(cut2)}) {
            ReasoningSplit part = parser.Add(chunk);
            joined.reasoning += part.reasoning;
            joined.content += part.content;
          }
          ReasoningSplit rest = parser.Finish();
          EXPECT_EQ(joined.reasoning + rest.reasoning, expected.reasoning) << text;
          EXPECT_EQ(joined.content + rest.content, expected.content) << text;
        }
      }
    }
  }
}

TEST(ReasoningParserTest, SplitsAtFirstEndMarker) {
  const ReasoningSplit split = SplitReasoning("a</think>b</think>c", true);
  EXPECT_EQ(split.reasoning, "a");
  EXPECT_EQ(split.content, "b</think>c");
  EXPECT_EQ(SplitReasoning("<think>x</think>y", false).reasoning, "x");
  EXPECT_EQ(SplitReasoning("x</think>y", false).content, "x</think>y");
}

TEST(StopStringsTest, FirstStopToCompleteWins) {
  const std::optional<StopMatch> match = FindStopString("xabcd", {"abcd", "bc"});
  ASSERT_TRUE(match.has_value());
  EXPECT_EQ(match->position, 2u);  // "bc" completes before "abcd"
  EXPECT_FALSE(FindStopString("abc", {"", "zz"}).has_value());
}

TEST(StopStringsTest, EveryChunkingStopsAtTheSamePlace) {
  const std::vector<std::string> stops = {"abcd", "bc", "\n\n"};
  for (const std::string text : {"xxabcdyy", "xxabcyy", "ab", "a\n\nb", "no stop at all"}) {
    const std::optional<StopMatch> match = FindStopString(text, stops);
    const std::string expected = match ? text.substr(0, match->position) : text;
    for (size_t cut = 0; cut <= text.size(); ++cut) {
      StopStringMatcher matcher(stops);
      std::string joined = matcher.Add(std::string_view(text).substr(0, cut));
      joined += matcher.Add(std::string_view(text).substr(cut));
      joined += matcher.Finish();
      EXPECT_EQ(joined, expected) << text << " cut " << cut;
      EXPECT_EQ(matcher.stopped(), match.has_value());
    }
  }
}

TEST(ToolCallParserTest, ParsesOneAndTwoCalls) {
  const std::string one =
      "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  ToolCallSplit split = ParseToolCalls(one, "call_");
  EXPECT_EQ(split.content, "Sure.");
  ASSERT_EQ(split.tool_calls.size(), 1u);
  EXPECT_EQ(split.tool_calls[0],
            (ToolCall{0, "call_0", "function", "get_weather", "{\"city\": \"Paris\"}"}));

  const std::string two =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```"
      "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n{\"x\": 1}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  split = ParseToolCalls(two, "id-");
  EXPECT_EQ(split.content, "");
  ASSERT_EQ(split.tool_calls.size(), 2u);
  EXPECT_EQ(split.tool_calls[1], (ToolCall{1, "id-1", "function", "b", "{\"x\": 1}"}));
}

TEST(ToolCallParserTest, MalformedMarkupIsText) {
  for (const std::string text :
       {"<｜tool▁calls▁begin｜>garbage<｜tool▁calls▁end｜> after",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{bad\n```"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n[1]\n```"
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁begin｜>"}) {
    const ToolCallSplit split = ParseToolCalls(text, "call_");
    EXPECT_TRUE(split.tool_calls.empty()) << text;
    EXPECT_EQ(split.content, text);
  }
}

TEST(ToolCallParserTest, EveryChunkingGivesTheWholeTextParse) {
  const std::string text =
      "pre<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>mid<｜tool▁calls▁begin｜>bad<｜tool▁calls▁end｜>"
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n{\"k\": [1]}"
      "<｜tool▁call▁end｜>";
  const ToolCallSplit expected = ParseToolCalls(text, "c");
  ASSERT_EQ(expected.tool_calls.size(), 2u);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    ToolCallParser parser("c");
    ToolCallSplit joined = parser.Add(std::string_view(text).substr(0, cut));
    for (ToolCallSplit part : {parser.Add(std::string_view(text).substr(cut)), parser.Finish()}) {
      joined.content += part.content;
      joined.tool_calls.insert(joined.tool_calls.end(), part.tool_calls.begin(),
                               part.tool_calls.end());
    }
    EXPECT_EQ(joined.content, expected.content) << cut;
    EXPECT_EQ(joined.tool_calls, expected.tool_calls) << cut;
  }
}

TEST(OutputProcessorTest, ThinkBoundaryInsideOneChunkGivesTwoDeltas) {
  const std::vector<TokenId> chunk = Ids("Thinking done.</think>The answer is 4.");
  ASSERT_NE(std::find(chunk.begin(), chunk.end(), kThinkEndId), chunk.end());
  OutputProcessor processor(R1Tokenizer(), R1Options());
  const std::vector<OutputDelta> deltas = processor.Add(chunk);
  ASSERT_EQ(deltas.size(), 2u);
  EXPECT_EQ(deltas[0].reasoning_content, "Thinking done.");
  EXPECT_EQ(deltas[0].content, "");
  EXPECT_EQ(deltas[1].content, "The answer is 4.");
  EXPECT_EQ(deltas[1].reasoning_content, "");
}

TEST(OutputProcessorTest, StopStringSpanningThreeTokensStopsExactlyAndIsTrimmed) {
  const std::string answer = "Answer 42<<STOP>> never shown";
  const std::vector<TokenId> ids = Ids(answer);
  // Find the tokens the stop string covers; the test needs it split over three or more.
  size_t offset = 0, first_token = 0, last_token = 0;
  const size_t stop_begin = answer.find("<<STOP>>"), stop_end = stop_begin + 8;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t next = offset + R1Tokenizer().TokenBytes(ids[i]).size();
    if (offset <= stop_begin && stop_begin < next) first_token = i;
    if (offset < stop_end && stop_end <= next) last_token = i;
    offset = next;
  }
  ASSERT_GE(last_token - first_token + 1, 3u);

  OutputOptions options;
  options.stop_strings = {"<<STOP>>"};
  OutputProcessor processor(R1Tokenizer(), options);
  std::string content;
  for (size_t i = 0; i < ids.size(); ++i) {
    for (const OutputDelta& delta : processor.Add(ids[i])) {
      content += delta.content;
      EXPECT_EQ(delta.content.find('<'), std::string::npos) << "held-back prefix leaked";
    }
    EXPECT_EQ(processor.finished(), i >= last_token) << "token " << i;
    if (processor.finished()) break;
  }
  EXPECT_EQ(content, "Answer 42");
  EXPECT_EQ(processor.finish_reason(), FinishReason::kStop);
  EXPECT_EQ(ProcessCompletedOutput(R1Tokenizer(), options, ids),
            (CompletedOutput{"", "Answer 42", {}, FinishReason::kStop}));
}

TEST(OutputProcessorTest, StopStringInsideReasoningDoesNotStop) {
  OutputOptions options = R1Options();
  options.stop_strings = {"STOP"};
  const std::vector<TokenId> ids =
      Concat(Ids("I must not STOP here</think>Fine. STOP now"), {kEos});
  const CompletedOutput streamed = Stream(options, ids);
  EXPECT_EQ(streamed.reasoning_content, "I must not STOP here");
  EXPECT_EQ(streamed.content, "Fine. ");
  EXPECT_EQ(streamed.finish_reason, FinishReason::kStop);
  EXPECT_EQ(streamed, ProcessCompletedOutput(R1Tokenizer(), options, ids));
}

TEST(OutputProcessorTest, BudgetRunningOutInReasoningLeavesContentEmpty) {
  const std::vector<TokenId> ids = Ids("Let me think about this for a long </thi");
  const CompletedOutput streamed = Stream(R1Options(), ids);
  EXPECT_EQ(streamed.reasoning_content, "Let me think about this for a long </thi");
  EXPECT_EQ(streamed.content, "");
  EXPECT_TRUE(streamed.tool_calls.empty());
  EXPECT_EQ(streamed.finish_reason, FinishReason::kLength);
  EXPECT_EQ(streamed, ProcessCompletedOutput(R1Tokenizer(), R1Options(), ids));
}

TEST(OutputProcessorTest, FinishReasonToolCallsOnlyWhenACallWasParsed) {
  const std::string call =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  const std::vector<TokenId> good = Concat(Ids("Weather?</think>" + call), {kEos});
  const CompletedOutput parsed = Stream(R1Options(), good);
  EXPECT_EQ(parsed.reasoning_content, "Weather?");
  EXPECT_EQ(parsed.content, "");
  ASSERT_EQ(parsed.tool_calls.size(), 1u);
  EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
  EXPECT_EQ(parsed.tool_calls[0].arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(parsed.finish_reason, FinishReason::kToolCalls);
  EXPECT_EQ(parsed, ProcessCompletedOutput(R1Tokenizer(), R1Options(), good));

  // Malformed: the markup comes back as content and the finish reason is plain stop.
  const std::string bad_call =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": Paris}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  const std::vector<TokenId> bad = Concat(Ids("Hmm</think>" + bad_call), {kEos});
  const CompletedOutput text = Stream(R1Options(), bad);
  EXPECT_EQ(text.content, bad_call);
  EXPECT_TRUE(text.tool_calls.empty());
  EXPECT_EQ(text.finish_reason, FinishReason::kStop);
  EXPECT_EQ(text, ProcessCompletedOutput(R1Tokenizer(), R1Options(), bad));

  // Tools not offered: the markup is content.
  OutputOptions no_tools = R1Options();
  no_tools.parse_tool_calls = false;
  EXPECT_EQ(Stream(no_tools, good).content, call);
  EXPECT_EQ(Stream(no_tools, good).finish_reason, FinishReason::kStop);
}

TEST(OutputProcessorTest, OutputOpeningWithThinkAndV3WithoutReasoning) {
  OutputOptions opens = R1Options();
  opens.starts_in_reasoning = false;
  const std::vector<TokenId> ids = Concat(Ids("<think>\nhm</think>\n\nYes"), {kEos});
  EXPECT_EQ(Stream(opens, ids), (CompletedOutput{"\nhm", "\n\nYes", {}, FinishReason::kStop}));

  OutputOptions v3;  // no reasoning parsing: everything is content
  EXPECT_EQ(Stream(v3, ids),
            (CompletedOutput{"", "<think>\nhm</think>\n\nYes", {}, FinishReason::kStop}));
}

TEST(OutputProcessorTest, IdsAfterStopTokenAreIgnored) {
  const std::vector<TokenId> ids = Concat(Concat(Ids("done</think>ok"), {kEos}), Ids("junk"));
  OutputProcessor processor(R1Tokenizer(), R1Options());
  const std::vector<OutputDelta> deltas = processor.Add(ids);
  const CompletedOutput joined = JoinDeltas(deltas, processor.finish_reason());
  EXPECT_TRUE(processor.finished());
  EXPECT_TRUE(processor.Add(Ids("more")).empty());
  EXPECT_TRUE(processor.Finish().empty());
  EXPECT_EQ(joined, (CompletedOutput{"done", "ok", {}, FinishReason::kStop}));
}

// Streamed == non-streamed over random mixtures of reasoning, answer, stop strings and tool
// markup, tokenized for real and also split byte by byte, fed in steps of 1 to 3 ids.
TEST(OutputProcessorTest, StreamedDeltasJoinToTheNonStreamedResult) {
  const std::vector<std::string> pieces = {
      "think ",
      "</think>",
      "<think>",
      "answer ",
      "STOP",
      "ST",
      "OP",
      "🙂",
      "你好",
      "👨‍👩‍👧",
      "\n\n",
      "<｜tool▁calls▁begin｜>",
      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n",
      "{\"a\": 1}",
      "\n```<｜tool▁call▁end｜>",
      "<｜tool▁calls▁end｜>",
      "{bad",
      "<",
      "</",
      "x",
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>g\n```json\n{\"b\": "
      "[2]}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"};
  std::mt19937 random(7);
  int with_reasoning = 0, with_content = 0, with_tool_calls = 0, stopped_by_string = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string text;
    const int count = random() % 12;
    for (int i = 0; i < count; ++i) text += pieces[random() % pieces.size()];
    std::vector<TokenId> ids;
    if (trial % 3 == 0) {
      for (unsigned char byte : text) ids.push_back(ByteToken(byte));
    } else {
      ids = Ids(text);
    }
    if (random() % 2 == 0) ids.push_back(kEos);
    OutputOptions options;
    options.parse_reasoning = random() % 4 != 0;
    options.starts_in_reasoning = random() % 2 == 0;
    options.parse_tool_calls = random() % 4 != 0;
    if (random() % 2 == 0) options.stop_strings = {"STOP", "\n\n"};
    const size_t step = 1 + random() % 3;
    std::vector<OutputDelta> deltas;
    const CompletedOutput streamed = Stream(options, ids, step, &deltas);
    for (const OutputDelta& delta : deltas) {
      EXPECT_EQ((delta.reasoning_content + delta.content).find(kReplacementCharacter),
                std::string::npos);
    }
    ASSERT_EQ(streamed, ProcessCompletedOutput(R1Tokenizer(), options, ids))
        << "trial " << trial << " text " << text;
    with_reasoning += !streamed.reasoning_content.empty();
    with_content += !streamed.content.empty();
    with_tool_calls += !streamed.tool_calls.empty();
    stopped_by_string += streamed.finish_reason != FinishReason::kLength && ids.back() != kEos;
  }
  // The mixture must exercise every path.
  EXPECT_GT(with_reasoning, 100);
  EXPECT_GT(with_content, 100);
  EXPECT_GT(with_tool_calls, 20);
  EXPECT_GT(stopped_by_string, 20);
}

}  // namespace
}  // namespace moemesh::text
