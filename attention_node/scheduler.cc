#include "attention_node/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <new>
#include <span>

#include "absl/strings/str_cat.h"
#include "core/obs/log.h"

namespace moemesh::attention_node {

using moemesh::v1::SequenceEvent;

void EventQueue::Push(SequenceEvent event) {
  absl::MutexLock lock(&mutex_);
  events_.push_back(std::move(event));
}

std::optional<SequenceEvent> EventQueue::Pop(int timeout_ms) {
  absl::MutexLock lock(&mutex_);
  auto has_event = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return !events_.empty(); };
  if (!mutex_.AwaitWithTimeout(absl::Condition(&has_event), absl::Milliseconds(timeout_ms))) {
    return std::nullopt;
  }
  SequenceEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

LaneThreads::LaneThreads(int max_lanes) {
  for (int lane = 1; lane < max_lanes; ++lane) threads_.emplace_back([this, lane] { Work(lane); });
}

LaneThreads::~LaneThreads() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void LaneThreads::Run(int lanes, const std::function<void(int)>& task) {
  {
    absl::MutexLock lock(&mutex_);
    task_ = &task;
    lanes_ = lanes;
    pending_ = std::max(0, lanes - 1);
    ++generation_;
  }
  task(0);
  absl::MutexLock lock(&mutex_);
  auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return pending_ == 0; };
  mutex_.Await(absl::Condition(&all_done));
  task_ = nullptr;
}

void LaneThreads::Work(int lane) {
  int64_t seen = 0;
  while (true) {
    const std::function<void(int)>* task = nullptr;
    {
      absl::MutexLock lock(&mutex_);
      auto woken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stopping_ || generation_ != seen;
      };
      mutex_.Await(absl::Condition(&woken));
      if (stopping_) return;
      seen = generation_;
      if (lane >= lanes_) continue;
      task = task_;
    }
    (*task)(lane);
    absl::MutexLock lock(&mutex_);
    --pending_;
  }
}

struct Scheduler::Sequence {
  std::string id;
  moemesh::v1::AddSequenceRequest request;
  std::vector<int32_t> prompt;
  std::shared_ptr<EventQueue> events;
  std::optional<model::LatentCache> cache;
  model::Sampler sampler;
  std::vector<int32_t> generated;
  // Every token whose position the cache must hold: the prompt, then each sampled token.
  // Positions [0, cached) are in the cache; the rest are fed by the next steps: a prompt in
  // chunks, a decode as the one last token, a preempted sequence all over again.
  std::vector<int32_t> tokens;
  int64_t cached = 0;
  bool finished = false;
  bool preempted = false;  // set during a step's reservation pass
  int64_t Pending() const { return static_cast<int64_t>(tokens.size()) - cached; }
};

namespace {

model::SamplingParams ToSamplingParams(const moemesh::v1::SamplingOptions& options) {
  model::SamplingParams params;
  params.temperature = options.temperature();
  params.top_p = options.top_p() == 0 ? 1.0 : options.top_p();
  params.top_k = options.top_k();
  if (options.has_seed()) params.seed = options.seed();
  for (const auto& entry : options.logit_bias()) {
    params.logit_bias.emplace_back(static_cast<int32_t>(entry.token_id()), entry.bias());
  }
  params.min_tokens = options.min_tokens();
  return params;
}

// Maps a step failure to the HTTP status the router should answer with.
uint32_t HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return 503;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    default:
      return 500;
  }
}

}  // namespace

Scheduler::Scheduler(model::DeepseekModel* model, std::shared_ptr<model::LatentBlockPool> pool,
                     RoutedExpertsFactory routed_experts, SchedulerOptions options)
    : model_(model),
      pool_(std::move(pool)),
      options_(options),
      lane_threads_(std::max(1, options.micro_batches)) {
  options_.micro_batches = std::max(1, options_.micro_batches);
  for (int lane = 0; lane < options_.micro_batches; ++lane) lanes_.push_back(routed_experts(lane));
  lane_logits_.resize(static_cast<size_t>(options_.micro_batches));
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  for (auto& sequence : running_) Finish(*sequence, SequenceEvent::ABORTED, "node shutting down", 503);
  absl::MutexLock lock(&mutex_);
  for (auto& sequence : waiting_) {
    SequenceEvent event;
    event.set_finish_reason(SequenceEvent::ABORTED);
    event.set_error("node shutting down");
    event.set_error_code(503);
    sequence->events->Push(std::move(event));
  }
  waiting_.clear();
}

absl::Status Scheduler::Add(const moemesh::v1::AddSequenceRequest& request,
                            std::shared_ptr<EventQueue> events) {
  const auto& config = model_->config();
  if (request.prompt_token_ids().empty()) {
    return absl::InvalidArgumentError("prompt_token_ids is empty");
  }
  for (uint32_t id : request.prompt_token_ids()) {
    if (id >= static_cast<uint32_t>(config.vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary of ", config.vocab_size));
    }
  }
  if (request.max_new_tokens() == 0) return absl::InvalidArgumentError("max_new_tokens is 0");
  model::SamplingParams params = ToSamplingParams(request.sampling());
  // min_tokens holds off EOS (unless ignored) and the stop ids.
  if (!request.ignore_eos()) params.min_tokens_suppressed.push_back(static_cast<int32_t>(config.eos_token_id));
  for (uint32_t id : request.stop_token_ids()) params.min_tokens_suppressed.push_back(static_cast<int32_t>(id));
  if (absl::Status status = model::ValidateSamplingParams(params, config.vocab_size); !status.ok()) {
    return status;
  }
  const int64_t needed = static_cast<int64_t>(request.prompt_token_ids_size()) + request.max_new_tokens();
  const int64_t capacity = pool_->capacity_blocks() * pool_->block_size();
  if (pool_->bounded() && needed > capacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the sequence needs ", needed, " cache positions (prompt ", request.prompt_token_ids_size(),
        " + max_new_tokens ", request.max_new_tokens(), ") but this node's cache holds ", capacity));
  }
  auto sequence = std::unique_ptr<Sequence>(new Sequence{
      request.sequence_id(), request,
      std::vector<int32_t>(request.prompt_token_ids().begin(), request.prompt_token_ids().end()),
      std::move(events), std::nullopt, model::Sampler(params)});
  sequence->tokens = sequence->prompt;
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_) return absl::UnavailableError("node shutting down");
    if (aborted_.count(request.sequence_id()) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("sequence ", request.sequence_id(), " exists"));
    }
    aborted_[request.sequence_id()] = false;
    waiting_.push_back(std::move(sequence));
  }
  return absl::OkStatus();
}

bool Scheduler::Abort(const std::string& sequence_id) {
  absl::MutexLock lock(&mutex_);
  auto it = aborted_.find(sequence_id);
  if (it == aborted_.end()) return false;
  it->second = true;
  return true;
}

SchedulerStatus Scheduler::Status() const {
  SchedulerStatus status;
  status.cache_capacity_tokens = pool_->capacity_blocks() * pool_->block_size();
  status.cache_used_tokens = pool_->used_blocks() * pool_->block_size();
  absl::MutexLock lock(&mutex_);
  status.running = running_count_;
  status.waiting = static_cast<int>(waiting_.size());
  status.preemptions = preemptions_;
  return status;
}

void Scheduler::Finish(Sequence& sequence, SequenceEvent::FinishReason reason,
                       const std::string& error, uint32_t error_code) {
  if (sequence.finished) return;
  sequence.finished = true;
  sequence.cache.reset();  // blocks back to the pool at once
  SequenceEvent event;
  event.set_finish_reason(reason);
  if (reason == SequenceEvent::ERROR) {
    // The sequence id is the router's request id plus "-<choice>" (openai_prompt.cc).
    obs::LogWarn("sequence failed sequence_id={} status={} generated={} error=\"{}\"",
                 sequence.id, error_code, sequence.generated.size(), error);
  }
  if (!error.empty()) event.set_error(error);
  event.set_error_code(error_code);
  event.set_prompt_tokens(static_cast<uint32_t>(sequence.prompt.size()));
  event.set_completion_tokens(static_cast<uint32_t>(sequence.generated.size()));
  sequence.events->Push(std::move(event));
}

void Scheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      // Level-triggered: a timeout only re-checks (aborts of running sequences need no wake-up
      // because running_count_ > 0 keeps the loop stepping).
      mutex_.AwaitWithTimeout(absl::Condition(this, &Scheduler::HasWork), absl::Milliseconds(100));
      if (stopping_) return;
    }
    // Out of memory outside the model's own boundary (admission, sampling, events): the
    // sequences of this node fail with an error and free their cache; the node keeps serving.
    try {
      Admit();
      RunStep();
    } catch (const std::bad_alloc&) {
      FailRunning("out of memory on the attention node during a step", 503);
    }
  }
}

void Scheduler::FailRunning(const std::string& error, uint32_t error_code) {
  for (auto& sequence : running_) Finish(*sequence, SequenceEvent::ERROR, error, error_code);
}

void Scheduler::Admit() {
  absl::MutexLock lock(&mutex_);
  // Aborted sequences leave first, so their blocks can go to the next in line.
  for (auto& sequence : running_) {
    if (aborted_[sequence->id]) Finish(*sequence, SequenceEvent::ABORTED);
  }
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (aborted_[(*it)->id]) {
      Finish(**it, SequenceEvent::ABORTED);
      aborted_.erase((*it)->id);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  // First come, first served: the head waits until its whole budget fits.
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Sequence& head = *waiting_.front();
    // Room for what is known now (prompt, or prompt + output of a preempted sequence) plus the
    // next token; later positions are reserved step by step (see Reserve in RunStep).
    model::LatentCache cache(pool_);
    if (!cache.Reserve(static_cast<int64_t>(head.tokens.size()) + 1).ok()) break;
    head.cache.emplace(std::move(cache));
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  // Drop finished sequences.
  std::vector<std::unique_ptr<Sequence>> still_running;
  for (auto& sequence : running_) {
    if (sequence->finished) {
      aborted_.erase(sequence->id);
    } else {
      still_running.push_back(std::move(sequence));
    }
  }
  running_ = std::move(still_running);
  running_count_ = static_cast<int>(running_.size());
}

void Scheduler::ReserveOrPreempt(std::vector<StepWork>& work) {
  for (StepWork& item : work) {
    Sequence& sequence = *item.sequence;
    if (sequence.preempted || sequence.finished) continue;
    const int64_t needed = sequence.cached + static_cast<int64_t>(item.tokens.size());
    while (!sequence.cache->Reserve(needed).ok()) {
      Sequence* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
        if (it->get() != &sequence && !(*it)->preempted && !(*it)->finished) {
          victim = it->get();
          break;
        }
      }
      if (victim == nullptr) {
        Finish(sequence, SequenceEvent::ERROR,
               absl::StrCat("the sequence needs ", needed, " cache positions, more than this ",
                            "node's cache holds (", pool_->capacity_blocks() * pool_->block_size(),
                            ")"),
               400);
        break;
      }
      // vLLM-style recompute preemption: drop the cache, keep the tokens.
      victim->preempted = true;
      victim->cache.reset();
      victim->cached = 0;
    }
  }
  work.erase(std::remove_if(work.begin(), work.end(),
                            [](const StepWork& item) {
                              return item.sequence->preempted || item.sequence->finished;
                            }),
             work.end());
  std::vector<std::unique_ptr<Sequence>> kept;
  std::vector<std::unique_ptr<Sequence>> preempted;
  for (auto& sequence : running_) {
    (sequence->preempted ? preempted : kept).push_back(std::move(sequence));
  }
  running_ = std::move(kept);
  if (preempted.empty()) return;
  absl::MutexLock lock(&mutex_);
  preemptions_ += static_cast<int64_t>(preempted.size());
  // Back to the head of the queue, in their admission order.
  for (auto it = preempted.rbegin(); it != preempted.rend(); ++it) {
    (*it)->preempted = false;
    waiting_.push_front(std::move(*it));
  }
  running_count_ = static_cast<int>(running_.size());
}

void Scheduler::RunStep() {
  if (running_.empty()) return;
  // The step: one token for each decoding sequence, then prompt chunks within the budget.
  using Work = StepWork;
  std::vector<Work> work;
  int64_t budget = options_.max_batch_tokens;
  for (auto& sequence : running_) {
    if (sequence->Pending() == 1) {
      work.push_back({sequence.get(), std::span<const int32_t>(&sequence->tokens.back(), 1), true});
      --budget;
    }
  }
  // Prefill chunks, shortest remaining prompt first: a short request admitted behind a very long
  // prompt starts decoding after a step or two instead of waiting for the whole long prefill;
  // the long one still gets whatever budget the others leave (and all of it once they decode).
  std::vector<Sequence*> prefilling;
  for (auto& sequence : running_) {
    if (sequence->Pending() > 1) prefilling.push_back(sequence.get());
  }
  std::stable_sort(prefilling.begin(), prefilling.end(), [](const Sequence* a, const Sequence* b) {
    return a->Pending() < b->Pending();
  });
  for (Sequence* sequence : prefilling) {
    const int64_t remaining = sequence->Pending();
    if (budget <= 0) break;
    const int64_t chunk = std::min(remaining, budget);
    budget -= chunk;
    work.push_back({sequence,
                    std::span<const int32_t>(sequence->tokens.data() + sequence->cached, chunk),
                    chunk == remaining});
  }
  ReserveOrPreempt(work);
  if (work.empty()) return;

  // Micro-batches: split the work in contiguous groups of about equal rows.
  const int lanes = std::min<int>(options_.micro_batches, static_cast<int>(work.size()));
  int64_t total_rows = 0;
  for (const Work& item : work) total_rows += static_cast<int64_t>(item.tokens.size());
  std::vector<std::vector<size_t>> groups(lanes);
  int64_t rows_so_far = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    const int lane = std::min<int>(lanes - 1, static_cast<int>(rows_so_far * lanes / total_rows));
    groups[lane].push_back(i);
    rows_so_far += static_cast<int64_t>(work[i].tokens.size());
  }
  // Each lane's logits go to its own buffer, kept between steps.
  std::vector<absl::Status> results(lanes);
  auto run_lane = [&](int lane) {
    std::vector<model::SequenceStep> steps;
    for (size_t index : groups[lane]) {
      steps.push_back({&*work[index].sequence->cache, work[index].tokens, work[index].samples});
    }
    if (steps.empty()) return;
    if (options_.observer == nullptr) {
      results[lane] = model_->ForwardInto(steps, *lanes_[lane], &lane_logits_[lane]);
      return;
    }
    model::ForwardTrace trace;
    trace.record_layer_outputs = false;
    const auto forward_start = std::chrono::steady_clock::now();
    results[lane] = model_->ForwardInto(steps, *lanes_[lane], &lane_logits_[lane], &trace);
    if (results[lane].ok()) {
      options_.observer->OnForward(
          lane, trace,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - forward_start).count());
    }
  };
  std::function<void(int)> run_group = [&](int lane) {
    // The lane's own allocations can fail too (Forward reports its own as ResourceExhausted).
    try {
      run_lane(lane);
    } catch (const std::bad_alloc&) {
      results[lane] = absl::ResourceExhaustedError("out of memory preparing the step");
    }
  };
  const auto step_start = std::chrono::steady_clock::now();
  lane_threads_.Run(lanes, run_group);
  const auto sampling_start = std::chrono::steady_clock::now();
  struct StepReport {  // reports the step when RunStep returns
    SchedulerObserver* observer;
    std::chrono::steady_clock::time_point step_start, sampling_start;
    ~StepReport() {
      if (observer == nullptr) return;
      const auto end = std::chrono::steady_clock::now();
      observer->OnStep(std::chrono::duration<double>(end - step_start).count(),
                       std::chrono::duration<double>(end - sampling_start).count());
    }
  } step_report{options_.observer, step_start, sampling_start};

  const int64_t vocab = model_->config().vocab_size;
  const uint32_t eos = static_cast<uint32_t>(model_->config().eos_token_id);
  for (int lane = 0; lane < lanes; ++lane) {
    if (!results[lane].ok()) {
      const absl::Status& status = results[lane];
      for (size_t index : groups[lane]) {
        Finish(*work[index].sequence, SequenceEvent::ERROR, std::string(status.message()),
               HttpStatusFor(status));
      }
      continue;
    }
    for (size_t g = 0; g < groups[lane].size(); ++g) {
      Work& item = work[groups[lane][g]];
      Sequence& sequence = *item.sequence;
      sequence.cached += static_cast<int64_t>(item.tokens.size());
      if (!item.samples) continue;
      const float* logits = lane_logits_[lane].data() + g * vocab;
      // The token's absolute position: prompt plus the tokens before it (a replayed sequence,
      // whose prompt carries its earlier output, draws at the same positions).
      const int32_t token =
          sequence.sampler.Sample(logits, vocab, static_cast<int64_t>(sequence.tokens.size()));
      sequence.generated.push_back(token);
      sequence.tokens.push_back(token);
      SequenceEvent event;
      moemesh::v1::GeneratedToken* generated = event.add_tokens();
      generated->set_token_id(static_cast<uint32_t>(token));
      if (sequence.request.logprobs() || sequence.request.top_logprobs() > 0) {
        // The model's distribution (before logit_bias / min_tokens), normalised once.
        const double normalizer = model::LogSumExp(logits, vocab);
        generated->set_logprob(model::Logprob(logits, normalizer, token));
        if (sequence.request.top_logprobs() > 0) {
          for (const auto& [id, logit] :
               model::TopLogits(logits, vocab, static_cast<int>(sequence.request.top_logprobs()))) {
            moemesh::v1::TopLogprob* top = generated->add_top_logprobs();
            top->set_token_id(static_cast<uint32_t>(id));
            top->set_logprob(model::Logprob(logits, normalizer, id));
          }
        }
      }
      SequenceEvent::FinishReason reason = SequenceEvent::NOT_FINISHED;
      const bool is_stop_token =
          (!sequence.request.ignore_eos() && static_cast<uint32_t>(token) == eos) ||
          std::find(sequence.request.stop_token_ids().begin(),
                    sequence.request.stop_token_ids().end(),
                    static_cast<uint32_t>(token)) != sequence.request.stop_token_ids().end();
      if (is_stop_token) {
        reason = SequenceEvent::STOP;
      } else if (sequence.generated.size() >= sequence.request.max_new_tokens()) {
        reason = SequenceEvent::LENGTH;
      }
      if (reason == SequenceEvent::NOT_FINISHED) {
        sequence.events->Push(std::move(event));
      } else {
        // The last token and the finish reason travel together.
        sequence.finished = true;
        sequence.cache.reset();
        event.set_finish_reason(reason);
        event.set_prompt_tokens(static_cast<uint32_t>(sequence.prompt.size()));
        event.set_completion_tokens(static_cast<uint32_t>(sequence.generated.size()));
        sequence.events->Push(std::move(event));
      }
    }
  }
}

}  // namespace moemesh::attention_node
