// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (DeepSeek-V3/R1's format).
//
// Encoding follows the Hugging Face `tokenizers` pipeline, driven only by the file's sections:
//   1. `added_tokens` are found first (leftmost-longest match, as the library's Aho-Corasick
//      split does) and become their ids directly;
//   2. the text between them goes through `normalizer` (a Sequence; DeepSeek's is empty), then
//      `pre_tokenizer` (a Sequence of Split regexes, compiled with PCRE2 in UTF + UCP mode, and a
//      ByteLevel step), then
//   3. `model` (BPE: each pre-token's bytes are merged by merge rank, lowest first, leftmost on
//      ties).
// Decoding maps each id to its bytes through the ByteLevel `decoder`; ids outside the vocabulary
// decode to nothing. The object is immutable after loading except for an internal, locked cache of
// pre-token -> ids, so one Tokenizer may be shared by many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/status/statusor.h"

namespace moemesh::text {

using TokenId = int32_t;

// The vocabulary symbol (UTF-8) standing for byte `byte` in GPT-2's byte-level alphabet, which
// the ByteLevel pre-tokenizer and decoder use: printable Latin-1 bytes stand for themselves, the
// other 68 are U+0100.. in byte order.
std::string ByteLevelSymbol(uint8_t byte);

class Tokenizer {
 public:
  // Reads `path`: a tokenizer.json file, or a directory holding one. Errors: NotFound when the
  // file is missing, InvalidArgument when it is not valid JSON or lacks a section, Unimplemented
  // for a normalizer / pre-tokenizer / model / decoder kind this reader does not handle.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Same, from the file's text.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, with no BOS/EOS added (Hugging Face's add_special_tokens=false; chat
  // prompts already carry <｜begin▁of▁sentence｜>). Invalid UTF-8 in `text` is first replaced by
  // U+FFFD, so any byte string is accepted.
  std::vector<TokenId> Encode(std::string_view text) const;

  // The text of `ids`: their bytes joined, invalid UTF-8 replaced by U+FFFD (as Hugging Face's
  // decode does). `skip_special_tokens` drops added tokens marked special (BOS, EOS, ...).
  std::string Decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  // Raw bytes of one token, possibly a partial UTF-8 character; empty for ids outside the
  // vocabulary. Used by the incremental detokenizer.
  std::string_view TokenBytes(TokenId id) const;

  // True for added tokens marked `special` in tokenizer.json.
  bool IsSpecial(TokenId id) const;

  // Id of an added token's content (e.g. "</think>") or of a vocabulary token written in its
  // byte-level form (e.g. "Ġthe"); nullopt when there is none.
  std::optional<TokenId> TokenToId(std::string_view token) const;

  // BPE of one pre-token's bytes with either merge loop (the rescanning one used for short
  // pre-tokens, or the heap used for long ones); both must agree. For tests.
  std::vector<TokenId> MergeBytesForTesting(std::string_view bytes, bool use_heap) const;

  // Drops the pre-token -> ids cache (benchmarks use it to measure the uncached path).
  void ClearCache() const;

  // One more than the largest id that has a token (the embedding table may be larger).
  int32_t vocab_size() const { return static_cast<int32_t>(token_bytes_.size()); }

 private:
  struct Regex;           // a compiled PCRE2 pattern (pre-tokenizer Split)
  struct AddedTokenTrie;  // byte trie over the added tokens' contents
  enum class SplitBehavior {
    kIsolated,
    kRemoved,
    kMergedWithPrevious,
    kMergedWithNext,
    kContiguous
  };
  struct Split {
    std::unique_ptr<Regex> regex;
    SplitBehavior behavior;
  };
  struct Merge {
    int32_t rank;
    TokenId merged;
  };

  Tokenizer();
  absl::Status Load(std::string_view json);

  // Pre-tokenizes `piece` with splits [level, end) and appends the BPE ids of each pre-token.
  void EncodeOrdinaryText(std::string_view piece, size_t level, std::vector<TokenId>* ids) const;
  // BPE of one pre-token (raw bytes), through the cache.
  void EncodePreToken(std::string_view bytes, std::vector<TokenId>* ids) const;
  // BPE merge loop (no cache).
  void MergeBytes(std::string_view bytes, bool use_heap, std::vector<TokenId>* ids) const;
  const Merge* FindMerge(TokenId left, TokenId right) const;

  std::vector<std::string> token_bytes_;                 // id -> bytes ("" where no token)
  std::vector<bool> special_;                            // id -> added token marked special
  absl::flat_hash_map<std::string, TokenId> token_ids_;  // byte-level token / added content -> id
  TokenId byte_ids_[256];                                // single byte -> its vocabulary id
  absl::flat_hash_map<uint64_t, Merge> merges_;          // (left id << 32 | right id) -> merge
  std::vector<Split> splits_;
  std::unique_ptr<AddedTokenTrie> added_tokens_;

  static constexpr size_t kShortPreToken = 48;  // longer pre-tokens use the heap merge loop
  static constexpr size_t kMaxCachedPreTokenBytes = 128;
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<TokenId>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace moemesh::text
