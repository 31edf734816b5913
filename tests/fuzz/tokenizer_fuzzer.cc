// libFuzzer target: Tokenizer::Encode / Decode and the incremental detokenizer on arbitrary bytes.
// Checks, beyond "no crash": decode(encode(s)) == s with invalid UTF-8 replaced by U+FFFD; and
// streaming ids through IncrementalDetokenizer gives exactly Decode of the same ids (the input's
// bytes read as little-endian int32 ids, in or out of the vocabulary).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/text/incremental_detokenizer.h"
#include "core/text/tokenizer.h"
#include "core/text/utf8.h"

namespace {

using moemesh::text::TokenId;
using moemesh::text::Tokenizer;

const Tokenizer& LoadTokenizer() {
  static const Tokenizer* tokenizer = [] {
    const char* path = std::getenv("MOEMESH_TOKENIZER");
    auto loaded = Tokenizer::FromFile(path != nullptr ? path : MOEMESH_FUZZ_TOKENIZER);
    if (!loaded.ok()) {
      std::fprintf(stderr, "cannot load tokenizer: %s\n", loaded.status().ToString().c_str());
      std::abort();
    }
    return loaded->release();
  }();
  return *tokenizer;
}

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  LoadTokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tokenizer = LoadTokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);

  const std::vector<TokenId> ids = tokenizer.Encode(text);
  Check(tokenizer.Decode(ids) == moemesh::text::Utf8Lossy(text), "decode(encode(s)) == s");

  std::vector<TokenId> raw_ids(size / 4);
  if (!raw_ids.empty()) std::memcpy(raw_ids.data(), data, raw_ids.size() * 4);
  for (const bool skip_special_tokens : {false, true}) {
    moemesh::text::IncrementalDetokenizer detokenizer(tokenizer, skip_special_tokens);
    std::string streamed;
    for (TokenId id : raw_ids) {
      const std::string piece = detokenizer.Add(id);
      Check(moemesh::text::IsValidUtf8(piece), "streamed pieces are valid UTF-8");
      streamed += piece;
    }
    streamed += detokenizer.Finish();
    Check(streamed == tokenizer.Decode(raw_ids, skip_special_tokens), "streamed == Decode");
  }
  return 0;
}
