#include "core/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/json_field.h"
#include "core/text/utf8.h"
#include "nlohmann/json.hpp"

namespace moemesh::text {
namespace {

using Json = nlohmann::json;

// A token id field: a JSON integer in [0, 2^24] (no real vocabulary is larger), checked without
// converting an out-of-range value first.
bool IsTokenIdInRange(const Json& id) {
  if (!id.is_number_integer()) return false;
  if (id.is_number_unsigned()) return id.get<uint64_t>() <= (1 << 24);
  return id.get<int64_t>() >= 0 && id.get<int64_t>() <= (1 << 24);
}

// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes
// are shifted to U+0100.. in byte order. `ByteToCodePoint()[b]` is the character for byte b.
const std::array<char32_t, 256>& ByteToCodePoint() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> map{};
    char32_t next_shifted = 256;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      map[byte] = printable ? static_cast<char32_t>(byte) : next_shifted++;
    }
    return map;
  }();
  return table;
}

// Inverse of ByteToCodePoint: code point -> byte, or -1.
int CodePointToByte(char32_t code_point) {
  static const std::vector<int> table = [] {
    std::vector<int> inverse(512, -1);
    for (int byte = 0; byte < 256; ++byte) inverse[ByteToCodePoint()[byte]] = byte;
    return inverse;
  }();
  return code_point < table.size() ? table[code_point] : -1;
}

// The bytes a token string stands for under the ByteLevel decoder: every character mapped back
// to its byte, or, when some character is not in the byte alphabet, the string's own UTF-8
// (the Hugging Face decoder's fallback).
std::string ByteLevelDecode(std::string_view token) {
  std::string bytes;
  size_t position = 0;
  while (position < token.size()) {
    const int byte = CodePointToByte(NextCodePoint(token, &position));
    if (byte < 0) return std::string(token);
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

// Hugging Face compiles Split patterns with Oniguruma, where \s is Unicode White_Space. PCRE2's
// \s (with UCP) is \p{Z} plus \t\n\v\f\r, which lacks U+0085; add it so both agree.
std::string TranslateWhitespaceClass(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[i + 1];
      ++i;
      if (escaped == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (escaped == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out.push_back('\\');
        out.push_back(escaped);
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<Json> ParseJson(std::string_view text) {
  Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("tokenizer.json is not valid JSON");
  return json;
}

}  // namespace

std::string ByteLevelSymbol(uint8_t byte) {
  std::string symbol;
  AppendCodePoint(ByteToCodePoint()[byte], &symbol);
  return symbol;
}

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

// Byte trie over the added tokens' contents; `LongestAt` gives the longest token starting at a
// position, which scanned left to right is the leftmost-longest match.
struct Tokenizer::AddedTokenTrie {
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    TokenId token = -1;
  };
  std::vector<Node> nodes{1};
  bool first_byte[256] = {};

  void Insert(std::string_view content, TokenId id) {
    int32_t node = 0;
    for (unsigned char byte : content) {
      int32_t child = -1;
      for (const auto& [edge, target] : nodes[node].children) {
        if (edge == byte) child = target;
      }
      if (child < 0) {
        child = static_cast<int32_t>(nodes.size());
        nodes[node].children.emplace_back(byte, child);
        nodes.emplace_back();
      }
      node = child;
    }
    nodes[node].token = id;
    first_byte[static_cast<unsigned char>(content[0])] = true;
  }

  // Longest token at text[position]: its id and length, or {-1, 0}.
  std::pair<TokenId, size_t> LongestAt(std::string_view text, size_t position) const {
    std::pair<TokenId, size_t> best{-1, 0};
    int32_t node = 0;
    for (size_t i = position; i < text.size(); ++i) {
      int32_t child = -1;
      const unsigned char byte = static_cast<unsigned char>(text[i]);
      for (const auto& [edge, target] : nodes[node].children) {
        if (edge == byte) {
          child = target;
          break;
        }
      }
      if (child < 0) break;
      node = child;
      if (nodes[node].token >= 0) best = {nodes[node].token, i + 1 - position};
    }
    return best;
  }
};

Tokenizer::Tokenizer() : added_tokens_(std::make_unique<AddedTokenTrie>()) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::string file = path;
  std::error_code error;
  // A directory names the tokenizer.json inside it.
  if (std::filesystem::is_directory(file, error)) file += "/tokenizer.json";
  std::ifstream in(file, std::ios::binary);
  if (!in.good()) return absl::NotFoundError(absl::StrCat("cannot read tokenizer file ", file));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromJson(buffer.str());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  absl::Status status = tokenizer->Load(json);
  if (!status.ok()) return status;
  return tokenizer;
}

absl::Status Tokenizer::Load(std::string_view text) {
  absl::StatusOr<Json> parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  if (!json.is_object()) return absl::InvalidArgumentError("tokenizer.json is not an object");

  // normalizer: only an (empty or nested) Sequence is supported; DeepSeek's is empty.
  std::function<absl::Status(const Json&)> check_normalizer = [&](const Json& n) -> absl::Status {
    if (n.is_null()) return absl::OkStatus();
    const std::string type = FieldOr(n, "type", std::string());
    if (type == "Sequence") {
      for (const Json& inner : FieldOr(n, "normalizers", Json::array())) {
        absl::Status status = check_normalizer(inner);
        if (!status.ok()) return status;
      }
      return absl::OkStatus();
    }
    return absl::UnimplementedError(absl::StrCat("normalizer type '", type, "' is not supported"));
  };
  if (absl::Status status = check_normalizer(FieldOr(json, "normalizer", Json())); !status.ok()) {
    return status;
  }

  // model: byte-level BPE without dropout, unk token or subword prefixes.
  const Json model = FieldOr(json, "model", Json());
  if (!model.is_object() || FieldOr(model, "type", std::string()) != "BPE") {
    return absl::UnimplementedError("tokenizer.json model is not BPE");
  }
  if (!FieldOr(model, "dropout", Json()).is_null() ||
      !FieldOr(model, "continuing_subword_prefix", Json()).is_null() ||
      !FieldOr(model, "end_of_word_suffix", Json()).is_null() ||
      FieldOr(model, "byte_fallback", false)) {
    return absl::UnimplementedError(
        "BPE dropout, subword prefixes/suffixes and byte_fallback are not supported");
  }
  const Json vocab = FieldOr(model, "vocab", Json());
  if (!vocab.is_object()) return absl::InvalidArgumentError("model.vocab is missing");
  auto add_token = [&](TokenId id, std::string bytes, std::string key) {
    if (id >= static_cast<TokenId>(token_bytes_.size())) {
      token_bytes_.resize(id + 1);
      special_.resize(id + 1, false);
    }
    token_bytes_[id] = std::move(bytes);
    token_ids_[std::move(key)] = id;
  };
  for (const auto& [token, id_json] : vocab.items()) {
    if (!IsTokenIdInRange(id_json)) {
      return absl::InvalidArgumentError(absl::StrCat("bad id for vocabulary token ", token));
    }
    add_token(id_json.get<TokenId>(), ByteLevelDecode(token), token);
  }
  for (int byte = 0; byte < 256; ++byte) {
    auto it = token_ids_.find(ByteLevelSymbol(static_cast<uint8_t>(byte)));
    if (it == token_ids_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary lacks byte ", byte));
    }
    byte_ids_[byte] = it->second;
  }
  const Json merges = FieldOr(model, "merges", Json::array());
  if (!merges.is_array()) return absl::InvalidArgumentError("model.merges is not an array");
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string left, right;
    const Json& merge = merges[rank];
    if (merge.is_string()) {  // "left right"
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("bad merge '", line, "'"));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {  // ["left", "right"]
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("bad merge at rank ", rank));
    }
    auto left_id = token_ids_.find(left), right_id = token_ids_.find(right),
         merged_id = token_ids_.find(left + right);
    if (left_id == token_ids_.end() || right_id == token_ids_.end() ||
        merged_id == token_ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge '", left, " ", right, "' uses a token outside the vocabulary"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(left_id->second) << 32) | static_cast<uint32_t>(right_id->second);
    merges_.try_emplace(key, Merge{static_cast<int32_t>(rank), merged_id->second});
  }

  // added_tokens: matched before BPE, decoded through the same byte-level rule.
  for (const Json& added : FieldOr(json, "added_tokens", Json::array())) {
    if (!added.is_object() || !FieldOr(added, "id", Json()).is_number_integer() ||
        !FieldOr(added, "content", Json()).is_string()) {
      return absl::InvalidArgumentError("bad entry in added_tokens");
    }
    if (FieldOr(added, "single_word", false) || FieldOr(added, "lstrip", false) ||
        FieldOr(added, "rstrip", false)) {
      return absl::UnimplementedError("added tokens with single_word/lstrip/rstrip");
    }
    const Json& id_json = added["id"];
    const std::string content = added["content"].get<std::string>();
    if (!IsTokenIdInRange(id_json) || content.empty()) {
      return absl::InvalidArgumentError("bad entry in added_tokens");
    }
    const TokenId id = static_cast<TokenId>(id_json.get<int64_t>());
    add_token(id, ByteLevelDecode(content), content);
    special_[id] = FieldOr(added, "special", false);
    added_tokens_->Insert(content, id);
  }

  // pre_tokenizer: a Sequence of Split (regex or literal) and ByteLevel steps.
  std::function<absl::Status(const Json&)> add_pre_tokenizer = [&](const Json& p) -> absl::Status {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = FieldOr(p, "type", std::string());
    std::string pattern;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    if (type == "Sequence") {
      for (const Json& inner : FieldOr(p, "pretokenizers", Json::array())) {
        if (absl::Status status = add_pre_tokenizer(inner); !status.ok()) return status;
      }
      return absl::OkStatus();
    } else if (type == "ByteLevel") {
      if (FieldOr(p, "add_prefix_space", false)) {
        return absl::UnimplementedError("ByteLevel pre-tokenizer with add_prefix_space");
      }
      if (!FieldOr(p, "use_regex", true)) return absl::OkStatus();  // bytes are mapped by BPE itself
      // GPT-2's pattern, which ByteLevel applies when use_regex is set.
      pattern =
          "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    } else if (type == "Split") {
      const Json regex = FieldOr(p, "pattern", Json());
      if (regex.contains("Regex") && regex["Regex"].is_string()) {
        pattern = regex["Regex"].get<std::string>();
      } else if (regex.contains("String") && regex["String"].is_string()) {
        pattern = "\\Q" + regex["String"].get<std::string>() + "\\E";
      } else {
        return absl::InvalidArgumentError("Split pre-tokenizer without a pattern");
      }
      if (FieldOr(p, "invert", false)) return absl::UnimplementedError("inverted Split");
      const std::string behavior_name = FieldOr(p, "behavior", std::string());
      if (behavior_name == "Isolated") {
        behavior = SplitBehavior::kIsolated;
      } else if (behavior_name == "Removed") {
        behavior = SplitBehavior::kRemoved;
      } else {
        return absl::UnimplementedError(
            absl::StrCat("Split behavior '", behavior_name, "' is not supported"));
      }
    } else {
      return absl::UnimplementedError(
          absl::StrCat("pre_tokenizer type '", type, "' is not supported"));
    }
    const std::string translated = TranslateWhitespaceClass(pattern);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    auto regex = std::make_unique<Regex>();
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (regex->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return absl::InvalidArgumentError(
          absl::StrCat("pre-tokenizer regex '", pattern,
                       "' does not compile: ", reinterpret_cast<char*>(message)));
    }
    regex->jit = pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE) == 0;
    splits_.push_back(Split{std::move(regex), behavior});
    return absl::OkStatus();
  };
  if (absl::Status status = add_pre_tokenizer(FieldOr(json, "pre_tokenizer", Json())); !status.ok()) {
    return status;
  }

  const Json decoder = FieldOr(json, "decoder", Json());
  if (!decoder.is_null() && FieldOr(decoder, "type", std::string()) != "ByteLevel") {
    return absl::UnimplementedError("only the ByteLevel decoder is supported");
  }
  return absl::OkStatus();
}

std::vector<TokenId> Tokenizer::Encode(std::string_view text) const {
  std::string sanitized;
  if (!IsValidUtf8(text)) {
    sanitized = Utf8Lossy(text);
    text = sanitized;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t ordinary_start = 0;
  for (size_t position = 0; position < text.size(); ++position) {
    if (!added_tokens_->first_byte[static_cast<unsigned char>(text[position])]) continue;
    const auto [id, length] = added_tokens_->LongestAt(text, position);
    if (id < 0) continue;
    EncodeOrdinaryText(text.substr(ordinary_start, position - ordinary_start), 0, &ids);
    ids.push_back(id);
    position += length - 1;
    ordinary_start = position + 1;
  }
  EncodeOrdinaryText(text.substr(ordinary_start), 0, &ids);
  return ids;
}

void Tokenizer::EncodeOrdinaryText(std::string_view piece, size_t level,
                                   std::vector<TokenId>* ids) const {
  if (piece.empty()) return;
  if (level == splits_.size()) {
    EncodePreToken(piece, ids);
    return;
  }
  const Split& split = splits_[level];
  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t gap_start = 0, offset = 0;
  while (offset < piece.size()) {
    // The subject is valid UTF-8 (checked in Encode), so PCRE2's own check is skipped.
    int result = PCRE2_ERROR_JIT_STACKLIMIT;
    if (split.regex->jit) {
      result = pcre2_jit_match(split.regex->code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK,
                               match, nullptr);
    }
    if (result < 0 && result != PCRE2_ERROR_NOMATCH) {
      // No JIT, or its stack ran out: the interpreter keeps its backtracking on the heap.
      result = pcre2_match(split.regex->code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK,
                           match, nullptr);
    }
    if (result < 0) break;  // no further match: the rest of the piece is one gap
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    const size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {  // empty match: step over one character and look again
      offset = begin + 1;
      while (offset < piece.size() && (static_cast<unsigned char>(piece[offset]) & 0xC0) == 0x80) {
        ++offset;
      }
      continue;
    }
    EncodeOrdinaryText(piece.substr(gap_start, begin - gap_start), level + 1, ids);
    if (split.behavior == SplitBehavior::kIsolated) {
      EncodeOrdinaryText(piece.substr(begin, end - begin), level + 1, ids);
    }
    gap_start = offset = end;
  }
  pcre2_match_data_free(match);
  EncodeOrdinaryText(piece.substr(gap_start), level + 1, ids);
}

void Tokenizer::EncodePreToken(std::string_view bytes, std::vector<TokenId>* ids) const {
  if (bytes.size() == 1) {
    ids->push_back(byte_ids_[static_cast<unsigned char>(bytes[0])]);
    return;
  }
  const bool cacheable = bytes.size() <= kMaxCachedPreTokenBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mutex_);
    auto it = cache_.find(absl::string_view(bytes.data(), bytes.size()));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeBytes(bytes, /*use_heap=*/bytes.size() > kShortPreToken, ids);
  if (cacheable) {
    absl::MutexLock lock(&cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.try_emplace(std::string(bytes), ids->begin() + first, ids->end());
  }
}

void Tokenizer::ClearCache() const {
  absl::MutexLock lock(&cache_mutex_);
  cache_.clear();
}

const Tokenizer::Merge* Tokenizer::FindMerge(TokenId left, TokenId right) const {
  auto it = merges_.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::vector<TokenId> Tokenizer::MergeBytesForTesting(std::string_view bytes, bool use_heap) const {
  std::vector<TokenId> ids;
  if (!bytes.empty()) MergeBytes(bytes, use_heap, &ids);
  return ids;
}

void Tokenizer::MergeBytes(std::string_view bytes, bool use_heap, std::vector<TokenId>* ids) const {
  std::vector<TokenId> symbols(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    symbols[i] = byte_ids_[static_cast<unsigned char>(bytes[i])];
  }
  if (!use_heap) {
    // Short pre-tokens: rescan for the lowest-ranked adjacent pair after every merge.
    while (symbols.size() > 1) {
      int32_t best_rank = INT32_MAX;
      size_t best = 0;
      TokenId merged = -1;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const Merge* merge = FindMerge(symbols[i], symbols[i + 1]);
        if (merge != nullptr && merge->rank < best_rank) {
          best_rank = merge->rank;
          best = i;
          merged = merge->merged;
        }
      }
      if (merged < 0) break;
      symbols[best] = merged;
      symbols.erase(symbols.begin() + best + 1);
    }
    ids->insert(ids->end(), symbols.begin(), symbols.end());
    return;
  }
  // Long pre-tokens: a heap of candidate merges ordered by (rank, position) over a linked list
  // of symbols; stale candidates are recognised by their symbols no longer being there.
  const size_t n = symbols.size();
  std::vector<int32_t> next(n), previous(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
    previous[i] = static_cast<int32_t>(i) - 1;
  }
  struct Candidate {
    int32_t rank;
    int32_t position;
    TokenId left, right, merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t position) {
    if (position < 0 || next[position] < 0) return;
    const TokenId left = symbols[position], right = symbols[next[position]];
    if (const Merge* merge = FindMerge(left, right)) {
      heap.push(Candidate{merge->rank, position, left, right, merge->merged});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Candidate candidate = heap.top();
    heap.pop();
    const int32_t position = candidate.position;
    if (!alive[position] || symbols[position] != candidate.left || next[position] < 0 ||
        symbols[next[position]] != candidate.right) {
      continue;
    }
    const int32_t removed = next[position];
    symbols[position] = candidate.merged;
    alive[removed] = false;
    next[position] = next[removed];
    if (next[removed] >= 0) previous[next[removed]] = position;
    push(previous[position]);
    push(position);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) ids->push_back(symbols[i]);
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (TokenId id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    bytes += TokenBytes(id);
  }
  return Utf8Lossy(bytes);
}

std::string_view Tokenizer::TokenBytes(TokenId id) const {
  if (id < 0 || id >= static_cast<TokenId>(token_bytes_.size())) return {};
  return token_bytes_[id];
}

bool Tokenizer::IsSpecial(TokenId id) const {
  return id >= 0 && id < static_cast<TokenId>(special_.size()) && special_[id];
}

std::optional<TokenId> Tokenizer::TokenToId(std::string_view token) const {
  auto it = token_ids_.find(absl::string_view(token.data(), token.size()));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

}  // namespace moemesh::text
