// Turns generated token ids into text one id at a time, emitting only whole UTF-8 characters.
#pragma once

#include <string>

#include "core/text/tokenizer.h"

namespace moemesh::text {

// Per-sequence detokenizer. Byte-level BPE tokens can end inside a character (an emoji is often
// two or three tokens); their bytes are held until the character is complete, so no U+FFFD is
// ever emitted for a character still arriving. Bytes that can never form a character are
// replaced by U+FFFD exactly as Tokenizer::Decode replaces them, so the concatenated output of
// Add() and Finish() equals Decode() of all ids.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `skip_special_tokens` drops BOS/EOS-like tokens.
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);

  // Text completed by `id` (possibly empty). Ids outside the vocabulary add nothing.
  std::string Add(TokenId id);

  // End of the sequence: held bytes of an unfinished character become U+FFFD.
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string held_bytes_;  // the start of a character whose remaining bytes have not arrived
};

}  // namespace moemesh::text
