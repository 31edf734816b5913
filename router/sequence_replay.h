// What the router keeps of one running sequence so that it can resubmit it to another attention
// node when its node is lost or drained: the original request and the tokens already delivered.
// A resubmission is the prompt followed by those tokens (the new node recomputes their latent
// cache in one prefill), with the same seed and the remaining token budget. Because the random
// draw for a token depends only on (seed, position) (core/model/counter_rng.h) and a sequence's
// logits do not depend on the other sequences of its step, the new node continues the very same
// sequence. The events of every attempt are rewritten so the observer sees one sequence: token
// positions continue, usage counts are the whole sequence's, no token is repeated or skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moemesh/v1/attention.pb.h"

namespace moemesh::router {

class SequenceReplay {
 public:
  // `request` is the sequence as the router first submits it; it must carry a seed when it
  // samples (GrpcAttentionBackend sets one) for a resubmission to draw the same tokens.
  explicit SequenceReplay(moemesh::v1::AddSequenceRequest request);

  // The request of the next attempt: the original for the first, then prompt + delivered tokens
  // with max_new_tokens reduced by as many and the sequence id suffixed "/replay-N" (so a node
  // that still holds the old attempt never sees a duplicate id).
  moemesh::v1::AddSequenceRequest NextAttempt();

  enum class Verdict {
    kForward,   // pass the (rewritten) event on; the sequence continues
    kFinished,  // pass it on: it carries the finish reason, the sequence is complete
    kResubmit,  // the node handed the sequence back (drain, shutdown): pass on only its tokens,
                // if any, then resubmit elsewhere
  };
  // Records one event of the current attempt and rewrites it for the whole sequence:
  // prompt_tokens = the original prompt, completion_tokens = all tokens delivered. A HANDED_OVER
  // event, or ABORTED with error_code 503 (a node stopping), has its finish reason cleared and
  // yields kResubmit.
  Verdict OnEvent(moemesh::v1::SequenceEvent& event);

  const std::string& sequence_id() const { return original_.sequence_id(); }
  int64_t prompt_tokens() const { return original_.prompt_token_ids_size(); }
  // Tokens delivered to the observer so far (all attempts).
  int64_t delivered_tokens() const { return static_cast<int64_t>(delivered_.size()); }
  // Attempts started so far (1 after the first NextAttempt).
  int attempts() const { return attempts_; }
  // True once every token of a (non-zero) budget has been delivered: nothing left to resubmit.
  bool budget_spent() const {
    return original_.max_new_tokens() > 0 &&
           delivered_tokens() >= static_cast<int64_t>(original_.max_new_tokens());
  }
  // Cache positions the next attempt needs at most: prompt + delivered + remaining budget.
  uint64_t positions() const {
    return static_cast<uint64_t>(prompt_tokens()) + original_.max_new_tokens();
  }

 private:
  moemesh::v1::AddSequenceRequest original_;
  std::vector<uint32_t> delivered_;
  int64_t delivered_before_attempt_ = 0;
  int attempts_ = 0;
};

}  // namespace moemesh::router
