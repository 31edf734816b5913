// SequenceReplay: the resubmitted request is prompt + delivered tokens with the remaining budget
// and the same sampling, and events of every attempt are rewritten into one sequence.
#include "router/sequence_replay.h"

#include "gtest/gtest.h"

namespace moemesh::router {
namespace {

using moemesh::v1::SequenceEvent;

moemesh::v1::AddSequenceRequest Original() {
  moemesh::v1::AddSequenceRequest request;
  request.set_sequence_id("cmpl-1-0");
  for (uint32_t id : {5u, 6u, 7u}) request.add_prompt_token_ids(id);
  request.set_max_new_tokens(10);
  request.mutable_sampling()->set_temperature(0.8);
  request.mutable_sampling()->set_top_p(0.9);
  request.mutable_sampling()->set_has_seed(true);
  request.mutable_sampling()->set_seed(99);
  request.add_stop_token_ids(42);
  request.set_top_logprobs(3);
  return request;
}

SequenceEvent TokenEvent(uint32_t id) {
  SequenceEvent event;
  event.add_tokens()->set_token_id(id);
  return event;
}

TEST(SequenceReplayTest, FirstAttemptIsTheOriginal) {
  SequenceReplay replay(Original());
  EXPECT_EQ(replay.NextAttempt().SerializeAsString(), Original().SerializeAsString());
  EXPECT_EQ(replay.attempts(), 1);
}

TEST(SequenceReplayTest, ResubmissionCarriesDeliveredTokensAndRemainingBudget) {
  SequenceReplay replay(Original());
  replay.NextAttempt();
  for (uint32_t id : {100u, 101u, 102u}) {
    SequenceEvent event = TokenEvent(id);
    EXPECT_EQ(replay.OnEvent(event), SequenceReplay::Verdict::kForward);
  }
  const moemesh::v1::AddSequenceRequest next = replay.NextAttempt();
  EXPECT_EQ(next.sequence_id(), "cmpl-1-0/replay-1");
  EXPECT_EQ(std::vector<uint32_t>(next.prompt_token_ids().begin(), next.prompt_token_ids().end()),
            (std::vector<uint32_t>{5, 6, 7, 100, 101, 102}));
  EXPECT_EQ(next.max_new_tokens(), 7u);
  EXPECT_EQ(next.sampling().SerializeAsString(), Original().sampling().SerializeAsString());
  EXPECT_EQ(next.stop_token_ids_size(), 1);
  EXPECT_EQ(next.top_logprobs(), 3u);
  // The second attempt delivers 2 more and finishes: counts are the whole sequence's.
  SequenceEvent more = TokenEvent(103);
  EXPECT_EQ(replay.OnEvent(more), SequenceReplay::Verdict::kForward);
  SequenceEvent last = TokenEvent(104);
  last.set_finish_reason(SequenceEvent::STOP);
  last.set_prompt_tokens(6);
  last.set_completion_tokens(2);
  EXPECT_EQ(replay.OnEvent(last), SequenceReplay::Verdict::kFinished);
  EXPECT_EQ(last.prompt_tokens(), 3u);
  EXPECT_EQ(last.completion_tokens(), 5u);
  EXPECT_EQ(replay.delivered_tokens(), 5);
  // A third attempt starts from everything delivered.
  const moemesh::v1::AddSequenceRequest third = replay.NextAttempt();
  EXPECT_EQ(third.sequence_id(), "cmpl-1-0/replay-2");
  EXPECT_EQ(third.prompt_token_ids_size(), 8);
  EXPECT_EQ(third.max_new_tokens(), 5u);
}

TEST(SequenceReplayTest, HandBackIsResubmitNotAFinish) {
  SequenceReplay replay(Original());
  replay.NextAttempt();
  SequenceEvent handed;
  handed.set_finish_reason(SequenceEvent::HANDED_OVER);
  EXPECT_EQ(replay.OnEvent(handed), SequenceReplay::Verdict::kResubmit);
  EXPECT_EQ(handed.finish_reason(), SequenceEvent::NOT_FINISHED);
  // A node stopping aborts with 503: also handed back. An abort for another reason is final.
  SequenceEvent stopping;
  stopping.set_finish_reason(SequenceEvent::ABORTED);
  stopping.set_error_code(503);
  stopping.set_error("node shutting down");
  EXPECT_EQ(replay.OnEvent(stopping), SequenceReplay::Verdict::kResubmit);
  EXPECT_TRUE(stopping.error().empty());
  SequenceEvent aborted;
  aborted.set_finish_reason(SequenceEvent::ABORTED);
  EXPECT_EQ(replay.OnEvent(aborted), SequenceReplay::Verdict::kFinished);
  SequenceEvent error;
  error.set_finish_reason(SequenceEvent::ERROR);
  error.set_error_code(400);
  EXPECT_EQ(replay.OnEvent(error), SequenceReplay::Verdict::kFinished);
}

TEST(SequenceReplayTest, BudgetSpentWhenEveryTokenArrived) {
  moemesh::v1::AddSequenceRequest request = Original();
  request.set_max_new_tokens(2);
  SequenceReplay replay(request);
  replay.NextAttempt();
  SequenceEvent a = TokenEvent(1);
  replay.OnEvent(a);
  EXPECT_FALSE(replay.budget_spent());
  SequenceEvent b = TokenEvent(2);
  replay.OnEvent(b);
  EXPECT_TRUE(replay.budget_spent());
}

}  // namespace
}  // namespace moemesh::router
