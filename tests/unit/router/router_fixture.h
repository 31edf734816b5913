// The router's view of the shared tiny-r1 fixture (config, tokenizer, chat template), loaded once
// per test binary.
#pragma once

#include "gtest/gtest.h"
#include "router/openai_api.h"

namespace moemesh::router {

inline const LoadedModel& Model() {
  static const LoadedModel* model = [] {
    auto loaded = LoadModel(MOEMESH_SHARED_DIR "/fixtures/tiny-r1", "", 0);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *model;
}

}  // namespace moemesh::router
