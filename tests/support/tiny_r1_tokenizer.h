// DeepSeek-R1's tokenizer from the shared tiny-r1 fixture, loaded once per test binary.
#pragma once

#include "core/text/tokenizer.h"
#include "gtest/gtest.h"

namespace moemesh::testing {

inline const text::Tokenizer& TinyR1Tokenizer() {
  static const text::Tokenizer* tokenizer = [] {
    auto loaded = text::Tokenizer::FromFile(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/tokenizer.json");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *tokenizer;
}

}  // namespace moemesh::testing
