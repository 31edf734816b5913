// The attention node's scheduler with in-process experts: continuous batching gives the golden
// greedy tokens; a cache too small for everyone makes sequences wait or be preempted and
// recomputed, never truncated; aborts free the cache; an impossible sequence gets an error.
#include "attention_node/scheduler.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/checkpoint/checkpoint.h"
#include "core/model/expert_shard.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/tiny_r1.h"

namespace moemesh::attention_node {
namespace {

using nlohmann::json;
using moemesh::v1::SequenceEvent;

const json& Goldens() { return testing::TinyR1Goldens(); }

// Every lane computes the routed experts in process.
class SharedExperts : public model::RoutedExperts {
 public:
  explicit SharedExperts(model::ExpertShard* shard) : shard_(shard) {}
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const model::GateDecision& decision) override {
    return shard_->Dispatch(layer, hidden, rows, decision);
  }

 private:
  model::ExpertShard* shard_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    checkpoint_ = checkpoint::Checkpoint::Open(testing::FixtureDir())->release();
    model_ = model::DeepseekModel::Load(*checkpoint_)->release();
    experts_ = model::ExpertShard::LoadAll(*checkpoint_)->release();
  }
  static void TearDownTestSuite() {
    delete experts_;
    delete model_;
    delete checkpoint_;
  }

  std::unique_ptr<Scheduler> MakeScheduler(int64_t capacity_blocks, int block_size,
                                           int micro_batches = 2) {
    pool_ = model_->NewBlockPool(capacity_blocks, block_size);
    SchedulerOptions options;
    options.max_batch_tokens = 32;  // several chunked-prefill steps per prompt
    options.micro_batches = micro_batches;
    return std::make_unique<Scheduler>(
        model_, pool_,
        [](int) { return std::make_unique<SharedExperts>(experts_); }, options);
  }

  static moemesh::v1::AddSequenceRequest Request(const std::string& id, const json& prompt,
                                                 int max_new_tokens) {
    moemesh::v1::AddSequenceRequest request;
    request.set_sequence_id(id);
    for (int token : prompt["ids"]) request.add_prompt_token_ids(token);
    request.set_max_new_tokens(max_new_tokens);
    request.set_ignore_eos(true);
    return request;
  }

  // Reads events until the finish event; returns the tokens and the final event.
  static std::pair<std::vector<int>, SequenceEvent> Drain(EventQueue& events) {
    std::vector<int> tokens;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      auto event = events.Pop(100);
      if (!event) continue;
      for (const auto& token : event->tokens()) tokens.push_back(static_cast<int>(token.token_id()));
      if (event->finish_reason() != SequenceEvent::NOT_FINISHED) return {tokens, *event};
    }
    ADD_FAILURE() << "no finish event";
    return {tokens, SequenceEvent()};
  }

  static checkpoint::Checkpoint* checkpoint_;
  static model::DeepseekModel* model_;
  static model::ExpertShard* experts_;
  std::shared_ptr<model::LatentBlockPool> pool_;
};
checkpoint::Checkpoint* SchedulerTest::checkpoint_ = nullptr;
model::DeepseekModel* SchedulerTest::model_ = nullptr;
model::ExpertShard* SchedulerTest::experts_ = nullptr;

// The golden continuation, cut to `count` tokens (prompts here have no near-ties early on).
std::vector<int> Golden(const json& prompt, int count) {
  auto greedy = prompt["greedy"].get<std::vector<int>>();
  greedy.resize(count);
  return greedy;
}

TEST_F(SchedulerTest, ContinuousBatchingGivesGoldenTokens) {
  auto scheduler = MakeScheduler(/*capacity_blocks=*/64, /*block_size=*/16);
  const json& prompts = Goldens()["results"];
  std::vector<std::shared_ptr<EventQueue>> queues;
  for (size_t i = 0; i < prompts.size(); ++i) {
    queues.push_back(std::make_shared<EventQueue>());
    ASSERT_TRUE(scheduler->Add(Request("s" + std::to_string(i), prompts[i], 24), queues[i]).ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto [tokens, last] = Drain(*queues[i]);
    EXPECT_EQ(last.finish_reason(), SequenceEvent::LENGTH);
    EXPECT_EQ(last.completion_tokens(), 24u);
    EXPECT_EQ(tokens, Golden(prompts[i], 24)) << prompts[i]["name"];
  }
  EXPECT_EQ(scheduler->Status().cache_used_tokens, 0);
}

TEST_F(SchedulerTest, SmallCacheMakesSequencesWaitOrRecomputeNeverTruncates) {
  // 4 blocks of 16 positions: each sequence needs 35-46 positions, all four need ~170.
  auto scheduler = MakeScheduler(/*capacity_blocks=*/4, /*block_size=*/16);
  const json& prompts = Goldens()["results"];
  const std::vector<int> chosen = {0, 1, 3, 0};
  std::vector<std::shared_ptr<EventQueue>> queues;
  for (size_t i = 0; i < chosen.size(); ++i) {
    queues.push_back(std::make_shared<EventQueue>());
    ASSERT_TRUE(
        scheduler->Add(Request("w" + std::to_string(i), prompts[chosen[i]], 24), queues[i]).ok());
  }
  for (size_t i = 0; i < chosen.size(); ++i) {
    auto [tokens, last] = Drain(*queues[i]);
    EXPECT_EQ(last.finish_reason(), SequenceEvent::LENGTH) << last.error();
    EXPECT_EQ(tokens, Golden(prompts[chosen[i]], 24)) << "sequence " << i;
  }
  EXPECT_GT(scheduler->Status().preemptions, 0);
  EXPECT_EQ(scheduler->Status().cache_used_tokens, 0);
}

TEST_F(SchedulerTest, ShortPromptIsNotStuckBehindALongPrefill) {
  auto scheduler = MakeScheduler(256, 16);  // 32 prompt tokens per step: 21 steps for 663
  auto long_events = std::make_shared<EventQueue>();
  auto short_events = std::make_shared<EventQueue>();
  ASSERT_TRUE(scheduler->Add(Request("long", Goldens()["results"][5], 4), long_events).ok());
  ASSERT_TRUE(scheduler->Add(Request("short", Goldens()["results"][0], 1), short_events).ok());
  auto [short_tokens, short_last] = Drain(*short_events);
  EXPECT_EQ(short_tokens, Golden(Goldens()["results"][0], 1));
  // The long prompt is still prefilling: it has produced nothing yet.
  EXPECT_FALSE(long_events->Pop(0).has_value());
  auto [long_tokens, long_last] = Drain(*long_events);
  EXPECT_EQ(long_tokens, Golden(Goldens()["results"][5], 4));
}

TEST_F(SchedulerTest, AbortFreesTheCache) {
  auto scheduler = MakeScheduler(256, 16);
  auto events = std::make_shared<EventQueue>();
  ASSERT_TRUE(scheduler->Add(Request("long", Goldens()["results"][5], 2000), events).ok());
  // Wait until it holds cache, then abort.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (scheduler->Status().cache_used_tokens == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(scheduler->Status().cache_used_tokens, 0);
  EXPECT_TRUE(scheduler->Abort("long"));
  auto [tokens, last] = Drain(*events);
  EXPECT_EQ(last.finish_reason(), SequenceEvent::ABORTED);
  EXPECT_EQ(scheduler->Status().cache_used_tokens, 0);
  EXPECT_FALSE(scheduler->Abort("unknown"));
}

TEST_F(SchedulerTest, RefusesWhatCanNeverFitAndBadRequests) {
  auto scheduler = MakeScheduler(2, 16);  // 32 positions
  auto events = std::make_shared<EventQueue>();
  absl::Status too_big = scheduler->Add(Request("big", Goldens()["results"][1], 40), events);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.message().find("cache"), std::string::npos) << too_big;
  moemesh::v1::AddSequenceRequest bad = Request("bad", Goldens()["results"][0], 4);
  bad.add_prompt_token_ids(200000);
  EXPECT_EQ(scheduler->Add(bad, events).code(), absl::StatusCode::kInvalidArgument);
  moemesh::v1::AddSequenceRequest empty;
  empty.set_sequence_id("empty");
  empty.set_max_new_tokens(3);
  EXPECT_EQ(scheduler->Add(empty, events).code(), absl::StatusCode::kInvalidArgument);
}

// logit_bias and min_tokens reach the node's sampler; a token's logprob is one value whether
// reported as the sampled token or among the top alternatives.
TEST_F(SchedulerTest, LogitBiasMinTokensAndLogprobsReachSampling) {
  auto scheduler = MakeScheduler(64, 16);
  const int eos = model_->config().eos_token_id;
  moemesh::v1::AddSequenceRequest request = Request("bias", Goldens()["results"][0], 8);
  request.set_ignore_eos(false);
  auto* bias = request.mutable_sampling()->add_logit_bias();
  bias->set_token_id(static_cast<uint32_t>(eos));
  bias->set_bias(100);  // EOS becomes every step's greedy token...
  request.mutable_sampling()->set_min_tokens(2);  // ...but not before two tokens
  request.set_logprobs(true);
  request.set_top_logprobs(3);
  auto events = std::make_shared<EventQueue>();
  ASSERT_TRUE(scheduler->Add(request, events).ok());
  std::vector<moemesh::v1::GeneratedToken> tokens;
  SequenceEvent last;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    auto event = events->Pop(100);
    if (!event) continue;
    for (const auto& token : event->tokens()) tokens.push_back(token);
    last = *event;
    if (event->finish_reason() != SequenceEvent::NOT_FINISHED) break;
  }
  ASSERT_EQ(last.finish_reason(), SequenceEvent::STOP);
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_NE(static_cast<int>(tokens[0].token_id()), eos);
  EXPECT_NE(static_cast<int>(tokens[1].token_id()), eos);
  EXPECT_EQ(static_cast<int>(tokens[2].token_id()), eos);
  // Without the bias the first token is the golden greedy one (min_tokens only removes EOS).
  EXPECT_EQ(static_cast<int>(tokens[0].token_id()), Golden(Goldens()["results"][0], 1)[0]);
  int matched = 0;
  for (const auto& token : tokens) {
    for (const auto& top : token.top_logprobs()) {
      if (top.token_id() != token.token_id()) continue;
      EXPECT_EQ(top.logprob(), token.logprob());  // bit-equal, not merely close
      ++matched;
    }
  }
  EXPECT_GE(matched, 1);
}

}  // namespace
}  // namespace moemesh::attention_node
