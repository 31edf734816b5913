// Tokenizer against the shared goldens and a decode(encode(s)) == s property over random text.
#include "core/text/tokenizer.h"

#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/support/tiny_r1_tokenizer.h"
#include "nlohmann/json.hpp"

namespace moemesh::text {
namespace {

const Tokenizer& R1Tokenizer() { return testing::TinyR1Tokenizer(); }

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str());
}

TEST(TokenizerTest, GoldenCasesEncodeAndDecode) {
  const nlohmann::json goldens = ReadJson(MOEMESH_SHARED_DIR "/goldens/tokenizer.json");
  ASSERT_GE(goldens["cases"].size(), 66u);
  for (const auto& test_case : goldens["cases"]) {
    const std::string text = test_case["text"];
    const std::vector<TokenId> expected = test_case["ids"];
    EXPECT_EQ(R1Tokenizer().Encode(text), expected) << test_case["name"] << ": " << text;
    EXPECT_EQ(R1Tokenizer().Decode(expected), text) << test_case["name"];
  }
}

TEST(TokenizerTest, LoadsFromDirectory) {
  auto loaded = Tokenizer::FromFile(MOEMESH_SHARED_DIR "/fixtures/tiny-r1");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->TokenToId("</think>"), 128799);
  EXPECT_EQ((*loaded)->TokenToId("<think>"), 128798);
}

TEST(TokenizerTest, MissingFileIsNotFound) {
  auto loaded = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, BadJsonIsInvalidArgument) {
  EXPECT_EQ(Tokenizer::FromJson("{not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJson("{\"model\": {\"type\": \"WordPiece\"}}").status().code(),
            absl::StatusCode::kUnimplemented);
}

// A hostile tokenizer.json (fields of the wrong JSON type, found while fuzzing the checkpoint
// parsers) is an error, never an exception out of nlohmann's accessors.
TEST(TokenizerTest, FieldsOfTheWrongJsonTypeAreErrorsNotExceptions) {
  for (const char* json : {
           R"({"normalizer": {"type": 7}, "model": {"type": "BPE", "vocab": {}}})",
           R"({"normalizer": "Sequence", "model": {"type": "BPE", "vocab": {}}})",
           R"({"model": {"type": 7}})",
           R"({"model": {"type": "BPE", "byte_fallback": "yes", "vocab": {}}})",
           R"({"model": {"type": "BPE", "vocab": {"a": 18446744073709551615}}})",
           R"({"model": {"type": "BPE", "vocab": {}, "merges": {"a": 1}}})",
           R"({"model": {"type": "BPE", "vocab": {}}, "pre_tokenizer": {"type": ["Split"]}})",
           R"({"model": {"type": "BPE", "vocab": {}}, "decoder": {"type": 1}})",
       }) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(json);
    EXPECT_FALSE(tokenizer.ok()) << json;
  }
  // Past the vocabulary (a small one that loads; DeepSeek-R1's 4 MB file made this test take 35 s
  // under ASan): merges and added tokens of the wrong type.
  nlohmann::json real = nlohmann::json::parse(R"({
      "model": {"type": "BPE", "vocab": {}, "merges": ["a b"]},
      "added_tokens": [{"id": 257, "content": "<s>", "special": true}]})");
  // The 256 byte-level symbols, then "ab".
  for (int byte = 0; byte < 256; ++byte) {
    real["model"]["vocab"][ByteLevelSymbol(static_cast<uint8_t>(byte))] = byte;
  }
  real["model"]["vocab"]["ab"] = 256;
  ASSERT_TRUE(Tokenizer::FromJson(real.dump()).ok());
  nlohmann::json merges_object = real;
  merges_object["model"]["merges"] = {{"a", 1}};
  EXPECT_FALSE(Tokenizer::FromJson(merges_object.dump()).ok());
  nlohmann::json huge_added_id = real;
  huge_added_id["added_tokens"][0]["id"] = uint64_t{18446744073709551615u};
  EXPECT_FALSE(Tokenizer::FromJson(huge_added_id.dump()).ok());
  nlohmann::json special_string = real;
  special_string["added_tokens"][0]["special"] = "yes";  // not a bool: treated as absent
  EXPECT_TRUE(Tokenizer::FromJson(special_string.dump()).ok());
}

TEST(TokenizerTest, IdsOutsideVocabularyDecodeToNothing) {
  const std::vector<TokenId> ids = {19923, 128815, 129279, 200000, -5, 2058};
  EXPECT_EQ(R1Tokenizer().Decode(ids), "Hello world");
  EXPECT_EQ(R1Tokenizer().TokenBytes(129000), "");
}

TEST(TokenizerTest, SkipSpecialTokensDropsBosAndEosOnly) {
  const std::vector<TokenId> ids = {0, 128798, 19923, 128799, 1};
  EXPECT_EQ(R1Tokenizer().Decode(ids, /*skip_special_tokens=*/true), "<think>Hello</think>");
  EXPECT_EQ(R1Tokenizer().Decode(ids),
            "<｜begin▁of▁sentence｜><think>Hello</think><｜end▁of▁sentence｜>");
}

TEST(TokenizerTest, InvalidUtf8IsReplacedNotRejected) {
  const std::string text = "ok\xFF\xC3";
  EXPECT_EQ(R1Tokenizer().Decode(R1Tokenizer().Encode(text)), "ok\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerTest, HeapAndRescanningMergeLoopsAgree) {
  std::mt19937 random(11);
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz      \n\t0123456789";
  for (int i = 0; i < 300; ++i) {
    std::string bytes;
    const int length = 1 + random() % 120;
    for (int j = 0; j < length; ++j) bytes += alphabet[random() % alphabet.size()];
    if (i % 5 == 0) bytes += "你好世界🙂";
    EXPECT_EQ(R1Tokenizer().MergeBytesForTesting(bytes, /*use_heap=*/true),
              R1Tokenizer().MergeBytesForTesting(bytes, /*use_heap=*/false))
        << bytes;
  }
  // A long pre-token (a whitespace run) is encoded and decoded back.
  const std::string spaces(300, ' ');
  EXPECT_EQ(R1Tokenizer().Decode(R1Tokenizer().Encode(spaces + "x")), spaces + "x");
}

// Random strings over code points that stress the pre-tokenizer: every plane, combining marks,
// ZWJ sequences, variation selectors, whitespace runs, digits, CJK, and added-token fragments.
std::string RandomText(std::mt19937& random) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},       {0x09, 0x0D},       {0xA0, 0x24F},      {0x300, 0x36F},
      {0x370, 0x3FF},     {0x400, 0x4FF},     {0x590, 0x6FF},     {0x900, 0x97F},
      {0x1100, 0x11FF},   {0x2000, 0x206F},   {0x2190, 0x22FF},   {0x3000, 0x30FF},
      {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},   {0xE000, 0xF8FF},   {0xFE00, 0xFE0F},
      {0xFF00, 0xFFEF},   {0x10000, 0x1FFFF}, {0x1F300, 0x1FAFF}, {0x20000, 0x2FFFF},
      {0x30000, 0x3FFFF}, {0xE0000, 0xE01EF}, {0xF0000, 0x10FFFF}};
  static const std::vector<std::string> fragments = {"\u200D",
                                                     "   ",
                                                     "\n\n",
                                                     "\r\n",
                                                     "\t",
                                                     " \t \n ",
                                                     "<think>",
                                                     "</think>",
                                                     "<｜User｜>",
                                                     "<｜",
                                                     "｜>",
                                                     "123456",
                                                     "\U0001F468\u200D\U0001F469\u200D\U0001F467",
                                                     "e\u0301",
                                                     "\u00A0",
                                                     "\u0085",
                                                     "\u3000"};
  std::string text;
  const int length = std::uniform_int_distribution<int>(0, 40)(random);
  for (int i = 0; i < length; ++i) {
    if (random() % 5 == 0) {
      text += fragments[random() % fragments.size()];
      continue;
    }
    const auto& [low, high] = ranges[random() % ranges.size()];
    char32_t code_point = std::uniform_int_distribution<char32_t>(low, high)(random);
    if (code_point >= 0xD800 && code_point <= 0xDFFF) code_point = 0xFFFD;
    std::string encoded;
    if (code_point < 0x80) {
      encoded.push_back(static_cast<char>(code_point));
    } else if (code_point < 0x800) {
      encoded.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
      encoded.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else if (code_point < 0x10000) {
      encoded.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
      encoded.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
      encoded.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else {
      encoded.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
      encoded.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
      encoded.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
      encoded.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
    text += encoded;
  }
  return text;
}

TEST(TokenizerTest, DecodeOfEncodeIsIdentityOnRandomUnicode) {
  std::mt19937 random(20260101);  // fixed seed: the same strings every run
  for (int i = 0; i < 5000; ++i) {
    const std::string text = RandomText(random);
    const std::vector<TokenId> ids = R1Tokenizer().Encode(text);
    ASSERT_EQ(R1Tokenizer().Decode(ids), text) << "case " << i;
  }
}

}  // namespace
}  // namespace moemesh::text
