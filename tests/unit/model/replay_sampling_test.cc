// Replaying a seeded sampled sequence on the real tiny-r1 model: generating N tokens, or
// generating k, then starting again from prompt + those k tokens (a recompute prefill, as the
// router does when an attention node is lost) gives the same tokens, because each draw depends
// only on (seed, position).
//
// The settings keep a few well-separated candidates (top_k 8, temperature 0.8): a recompute
// prefill's logits are not yet bit-identical to the decode steps it replaces (about 1e-6 apart
// on this fixture; batch invariance is separate work), and over a near-flat distribution of the
// whole vocabulary (random weights, temperature 1) such a difference can move the draw to a
// neighbouring token. With top_k 8 a flip needs the draw within ~1e-6 of a boundary.
#include <vector>

#include "core/model/generator.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh::model {
namespace {

std::vector<int32_t> PromptIds(int index) {
  return testing::TinyR1Goldens()["results"][index]["ids"].get<std::vector<int32_t>>();
}

std::vector<int32_t> GenerateIds(testing::LoadedModel& loaded, std::vector<int32_t> prompt,
                                 int max_new_tokens, const SamplingParams& sampling) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.max_new_tokens = max_new_tokens;
  request.sampling = sampling;
  request.stop_at_eos = false;
  auto results = Generate(*loaded.model, *loaded.experts, {&request, 1});
  EXPECT_TRUE(results.ok()) << results.status();
  return results.ok() ? (*results)[0].generated : std::vector<int32_t>{};
}

TEST(ReplaySamplingTest, SeededSampledSequenceContinuesExactlyFromPromptPlusOutput) {
  testing::LoadedModel loaded = testing::LoadModelOrDie(testing::FixtureDir());
  const SamplingParams sampling{.temperature = 0.8, .top_p = 1.0, .top_k = 8, .seed = 77};
  constexpr int kTokens = 16;
  for (int prompt_index : {1}) {
    const std::vector<int32_t> prompt = PromptIds(prompt_index);
    const std::vector<int32_t> whole = GenerateIds(loaded, prompt, kTokens, sampling);
    ASSERT_EQ(whole.size(), static_cast<size_t>(kTokens));
    // Sampling among the top 8 on random weights is far from greedy: the test would not notice
    // a sampler that ignored the draw otherwise.
    EXPECT_NE(whole, GenerateIds(loaded, prompt, kTokens, SamplingParams{}));
    EXPECT_EQ(whole, GenerateIds(loaded, prompt, kTokens, sampling)) << "same seed, same output";
    for (int produced : {1, 7}) {
      std::vector<int32_t> replay_prompt = prompt;
      replay_prompt.insert(replay_prompt.end(), whole.begin(), whole.begin() + produced);
      const std::vector<int32_t> rest =
          GenerateIds(loaded, replay_prompt, kTokens - produced, sampling);
      EXPECT_EQ(rest, std::vector<int32_t>(whole.begin() + produced, whole.end()))
          << "prompt " << prompt_index << " replayed after " << produced << " tokens";
    }
  }
}

}  // namespace
}  // namespace moemesh::model
