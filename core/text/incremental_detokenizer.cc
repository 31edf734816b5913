#include "core/text/incremental_detokenizer.h"

#include "core/text/utf8.h"

namespace moemesh::text {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::Add(TokenId id) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return {};
  held_bytes_ += tokenizer_.TokenBytes(id);
  std::string text;
  const size_t held = AppendUtf8Lossy(held_bytes_, /*hold_incomplete_tail=*/true, &text);
  held_bytes_.erase(0, held_bytes_.size() - held);
  return text;
}

std::string IncrementalDetokenizer::Finish() {
  std::string text = Utf8Lossy(held_bytes_);
  held_bytes_.clear();
  return text;
}

}  // namespace moemesh::text
