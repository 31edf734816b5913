// Batch invariance and the SIMD paths on the tiny-r1 fixture: a sequence's logits must be the same
// bits whether it runs alone, in a step with 7 other sequences, or with its prompt prefilled in
// chunks of 7 tokens; and every SIMD path this CPU runs (AVX-512, AVX2, scalar) must meet the
// goldens and agree with the others bit for bit.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/kernels/cpu/simd_path.h"
#include "core/model/deepseek_model.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_r1.h"

namespace moemesh {
namespace {

using nlohmann::json;

class BatchInvarianceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    loaded_ = new testing::LoadedModel(testing::LoadModelOrDie(testing::FixtureDir()));
  }
  static void TearDownTestSuite() {
    delete loaded_;
    loaded_ = nullptr;
  }
  static testing::LoadedModel* loaded_;
};
testing::LoadedModel* BatchInvarianceTest::loaded_ = nullptr;

std::vector<int32_t> PromptIds(size_t index) {
  return testing::TinyR1Goldens()["results"][index]["ids"].get<std::vector<int32_t>>();
}

int32_t Argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

constexpr int kDecodeSteps = 4;

// Logits of the prompt's last token and of kDecodeSteps greedy decode steps, each [vocab].
using LogitTrace = std::vector<std::vector<float>>;

// Runs `prompt` (prefilled in chunks of `chunk` tokens, 0 = all at once) alongside `others`
// (prefilled together with its first chunk, then decoding greedily in the same steps).
LogitTrace RunSequence(model::DeepseekModel& model, model::RoutedExperts& experts,
               const std::vector<int32_t>& prompt, size_t chunk,
               const std::vector<std::vector<int32_t>>& others) {
  const int64_t vocab = model.config().vocab_size;
  model::LatentCache cache = model.NewCache();
  std::vector<model::LatentCache> other_caches;
  for (size_t i = 0; i < others.size(); ++i) other_caches.push_back(model.NewCache());
  std::vector<std::vector<int32_t>> other_next = others;  // tokens each other sequence feeds next
  LogitTrace trace;
  size_t done = 0;
  int32_t next = -1;
  while (trace.size() < 1 + kDecodeSteps) {
    std::vector<model::SequenceStep> steps;
    std::vector<int32_t> own;
    if (done < prompt.size()) {
      const size_t count = chunk == 0 ? prompt.size() : std::min(chunk, prompt.size() - done);
      own.assign(prompt.begin() + done, prompt.begin() + done + count);
      done += count;
    } else {
      own = {next};
    }
    steps.push_back({&cache, own, /*wants_logits=*/done == prompt.size()});
    for (size_t i = 0; i < others.size(); ++i) steps.push_back({&other_caches[i], other_next[i]});
    auto logits = model.Forward(steps, experts);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return trace;
    for (size_t i = 0; i < others.size(); ++i) {
      other_next[i] = {Argmax(logits->data() + (1 + i) * vocab, vocab)};
    }
    if (done == prompt.size()) {
      trace.emplace_back(logits->begin(), logits->begin() + vocab);
      next = Argmax(trace.back().data(), vocab);
    }
  }
  return trace;
}

void ExpectBitwiseEqual(const LogitTrace& expected, const LogitTrace& actual, const char* what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  for (size_t step = 0; step < expected.size(); ++step) {
    ASSERT_EQ(expected[step].size(), actual[step].size());
    int differing = 0;
    float worst = 0;
    for (size_t i = 0; i < expected[step].size(); ++i) {
      if (std::memcmp(&expected[step][i], &actual[step][i], sizeof(float)) != 0) {
        ++differing;
        worst = std::max(worst, std::fabs(expected[step][i] - actual[step][i]));
      }
    }
    EXPECT_EQ(differing, 0) << what << ", step " << step << " (0 = prefill): " << differing
                            << " logits differ, by up to " << worst;
  }
}

TEST_F(BatchInvarianceTest, AloneInABatchOfEightAndChunkedPrefillGiveTheSameBits) {
  auto& model = *loaded_->model;
  const std::vector<int32_t> prompt = PromptIds(2);  // raw_code, 32 tokens: 5 chunks of 7
  ASSERT_GT(prompt.size(), 14u);
  const LogitTrace alone = RunSequence(model, *loaded_->experts, prompt, 0, {});
  ASSERT_EQ(alone.size(), 1u + kDecodeSteps);

  // Seven other sequences of other lengths, prefilled in the same step, then decoding with it.
  std::vector<std::vector<int32_t>> others;
  for (size_t index : {0, 1, 3, 4}) others.push_back(PromptIds(index));
  others.push_back(std::vector<int32_t>(prompt.begin(), prompt.begin() + 9));
  others.push_back(std::vector<int32_t>(prompt.rbegin(), prompt.rend()));
  others.push_back(PromptIds(5));  // chat_long, 663 tokens
  ASSERT_EQ(others.size(), 7u);
  ExpectBitwiseEqual(alone, RunSequence(model, *loaded_->experts, prompt, 0, others), "batch of 8");

  ExpectBitwiseEqual(alone, RunSequence(model, *loaded_->experts, prompt, 7, {}), "chunks of 7");
  ExpectBitwiseEqual(alone, RunSequence(model, *loaded_->experts, prompt, 7, {others[0], others[2]}),
                     "chunks of 7 next to two decoding sequences");
}

// A recompute prefill (attention-node failover: the new node prefills prompt + the tokens
// already streamed) gives the same bits as the decode steps it replaces: the logits of its last
// row equal those of the decode step that fed the same token.
TEST_F(BatchInvarianceTest, RecomputePrefillOfPromptAndGeneratedTokensEqualsTheDecodeSteps) {
  auto& model = *loaded_->model;
  const int64_t vocab = model.config().vocab_size;
  const std::vector<int32_t> prompt = PromptIds(3);
  const LogitTrace decoded = RunSequence(model, *loaded_->experts, prompt, 0, {});
  ASSERT_EQ(decoded.size(), 1u + kDecodeSteps);
  std::vector<int32_t> replay = prompt;
  for (size_t step = 1; step < decoded.size(); ++step) {
    replay.push_back(Argmax(decoded[step - 1].data(), vocab));  // the token decode step `step` fed
    model::LatentCache cache = model.NewCache();
    model::SequenceStep prefill{&cache, replay};
    auto logits = model.Forward({&prefill, 1}, *loaded_->experts);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ExpectBitwiseEqual({decoded[step]}, {std::vector<float>(logits->begin(), logits->begin() + vocab)},
                       "recompute prefill vs decode step");
  }
}

// Every SIMD path meets the goldens' prefill logits and gives the same bits as the others.
TEST_F(BatchInvarianceTest, EverySimdPathMeetsTheGoldensWithTheSameBits) {
  auto& model = *loaded_->model;
  const kernels::SimdPath saved = kernels::ActiveSimdPath();
  std::vector<kernels::SimdPath> paths;
  for (auto path : {kernels::SimdPath::kAvx512, kernels::SimdPath::kAvx2,
                    kernels::SimdPath::kScalar}) {
    if (kernels::SimdPathSupported(path)) paths.push_back(path);
  }
  if (!kernels::SimdPathSupported(kernels::SimdPath::kAvx512)) {
    std::printf("note: this CPU has no AVX-512; testing %zu path(s)\n", paths.size());
  }
  const json& prompts = testing::TinyR1Goldens()["results"];
  std::vector<std::vector<float>> first;  // per prompt, from the first path
  for (kernels::SimdPath path : paths) {
    ASSERT_TRUE(kernels::SetSimdPath(path).ok());
    for (size_t p = 0; p < prompts.size(); ++p) {
      if (path == kernels::SimdPath::kScalar && prompts[p]["ids"].size() > 64) continue;  // slow
      model::LatentCache cache = model.NewCache();
      const std::vector<int32_t> ids = PromptIds(p);
      model::SequenceStep step{&cache, ids};
      auto logits = model.Forward({&step, 1}, *loaded_->experts);
      ASSERT_TRUE(logits.ok()) << logits.status();
      for (const json& entry : prompts[p]["prefill_top"]) {
        EXPECT_NEAR((*logits)[entry[0].get<int32_t>()], entry[1].get<double>(), 1e-3)
            << kernels::SimdPathName(path) << " " << prompts[p]["name"];
      }
      if (first.size() <= p) first.resize(p + 1);
      if (first[p].empty()) {
        first[p] = *logits;
      } else {
        EXPECT_EQ(std::memcmp(first[p].data(), logits->data(), sizeof(float) * logits->size()), 0)
            << kernels::SimdPathName(path) << " differs from " << kernels::SimdPathName(paths[0])
            << " on " << prompts[p]["name"];
      }
    }
  }
  ASSERT_TRUE(kernels::SetSimdPath(saved).ok());
}

}  // namespace
}  // namespace moemesh
