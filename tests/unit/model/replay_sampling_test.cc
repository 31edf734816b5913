// Replaying a seeded sampled sequence on the real tiny-r1 model: generating N tokens, or
// generating k, then starting again from prompt + those k tokens (a recompute prefill, as the
// router does when an attention node is lost) gives the same tokens, because each draw depends
// only on (seed, position).
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
  const SamplingParams sampling{.temperature = 1.0, .top_p = 0.95, .top_k = 0, .seed = 77};
  constexpr int kTokens = 16;
  for (int prompt_index : {1}) {
    const std::vector<int32_t> prompt = PromptIds(prompt_index);
    const std::vector<int32_t> whole = GenerateIds(loaded, prompt, kTokens, sampling);
    ASSERT_EQ(whole.size(), static_cast<size_t>(kTokens));
    // Sampling at temperature 1 on random weights is far from greedy: the test would not notice
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
