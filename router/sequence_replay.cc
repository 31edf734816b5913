#include "router/sequence_replay.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace moemesh::router {

using moemesh::v1::SequenceEvent;

SequenceReplay::SequenceReplay(moemesh::v1::AddSequenceRequest request)
    : original_(std::move(request)) {}

moemesh::v1::AddSequenceRequest SequenceReplay::NextAttempt() {
  ++attempts_;
  delivered_before_attempt_ = delivered_tokens();
  if (attempts_ == 1) return original_;
  moemesh::v1::AddSequenceRequest request = original_;
  request.set_sequence_id(absl::StrCat(original_.sequence_id(), "/replay-", attempts_ - 1));
  for (uint32_t token : delivered_) request.add_prompt_token_ids(token);
  const int64_t remaining = static_cast<int64_t>(original_.max_new_tokens()) - delivered_tokens();
  request.set_max_new_tokens(static_cast<uint32_t>(remaining > 0 ? remaining : 0));
  return request;
}

SequenceReplay::Verdict SequenceReplay::OnEvent(SequenceEvent& event) {
  for (const moemesh::v1::GeneratedToken& token : event.tokens()) {
    delivered_.push_back(token.token_id());
  }
  const bool handed_back =
      event.finish_reason() == SequenceEvent::HANDED_OVER ||
      (event.finish_reason() == SequenceEvent::ABORTED && event.error_code() == 503);
  if (handed_back) {
    event.set_finish_reason(SequenceEvent::NOT_FINISHED);
    event.clear_error();
    event.set_error_code(0);
  }
  if (event.prompt_tokens() != 0 || event.finish_reason() != SequenceEvent::NOT_FINISHED) {
    event.set_prompt_tokens(static_cast<uint32_t>(prompt_tokens()));
  }
  if (event.completion_tokens() != 0 || event.finish_reason() != SequenceEvent::NOT_FINISHED) {
    event.set_completion_tokens(
        static_cast<uint32_t>(delivered_before_attempt_ + event.completion_tokens()));
  }
  if (handed_back) return Verdict::kResubmit;
  return event.finish_reason() == SequenceEvent::NOT_FINISHED ? Verdict::kForward
                                                              : Verdict::kFinished;
}

}  // namespace moemesh::router
