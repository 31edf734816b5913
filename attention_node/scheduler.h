// Continuous batching on an attention node: admits sequences while the paged latent cache can
// hold their prompt plus their token budget (a sequence that does not fit waits; none is ever
// truncated), builds each step from every decoding sequence plus prefill chunks up to a token
// budget (chunked prefill), splits the step into micro-batches that run concurrently so one's
// attention overlaps the other's expert round trip, samples, and streams tokens out.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/model/deepseek_model.h"
#include "core/model/latent_cache.h"
#include "core/model/routed_experts.h"
#include "core/model/sampling.h"
#include "moemesh/v1/attention.pb.h"

namespace moemesh::attention_node {

// A sequence's events, produced by the scheduler thread and consumed by its RPC handler.
class EventQueue {
 public:
  void Push(moemesh::v1::SequenceEvent event);
  // Waits up to `timeout_ms` for an event; nullopt on timeout.
  std::optional<moemesh::v1::SequenceEvent> Pop(int timeout_ms);

 private:
  absl::Mutex mutex_;
  std::deque<moemesh::v1::SequenceEvent> events_ ABSL_GUARDED_BY(mutex_);
};

// Persistent threads for micro-batch lanes 1 .. lanes-1 (lane 0 runs on the calling thread), so
// a step does not start threads. Run is called from one thread at a time.
class LaneThreads {
 public:
  explicit LaneThreads(int max_lanes);
  ~LaneThreads();
  // Runs task(lane) for every lane in [0, lanes) (lanes <= max_lanes) and returns when all
  // have returned. `task` must not throw.
  void Run(int lanes, const std::function<void(int lane)>& task);

 private:
  void Work(int lane);
  absl::Mutex mutex_;
  const std::function<void(int)>* task_ ABSL_GUARDED_BY(mutex_) = nullptr;
  int lanes_ ABSL_GUARDED_BY(mutex_) = 0;
  int pending_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> threads_;
};

// Optional metrics hooks of the scheduler (called on its threads; must be thread-safe).
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  // Micro-batch lane `lane`'s Forward succeeded in `seconds`; `trace` holds its gate decisions
  // (one row per real token of the step, nothing else).
  virtual void OnForward(int lane, const model::ForwardTrace& trace, double seconds) = 0;
  // A step ended: its wall time and the part spent sampling.
  virtual void OnStep(double step_seconds, double sampling_seconds) = 0;
};

struct SchedulerOptions {
  int64_t max_batch_tokens = 512;  // new tokens per step (decode tokens + prefill chunks)
  int max_running = 256;           // sequences decoding at once
  int micro_batches = 2;           // concurrent micro-batches per step (1 = no overlap)
  SchedulerObserver* observer = nullptr;  // not owned; must outlive the scheduler
};

struct SchedulerStatus {
  int64_t cache_capacity_tokens = 0;
  int64_t cache_used_tokens = 0;  // blocks held, in tokens
  int running = 0;
  int waiting = 0;
  int64_t preemptions = 0;  // sequences whose cache was dropped to make room (recomputed later)
};

class Scheduler {
 public:
  // Makes the RoutedExperts of micro-batch lane `lane` (0 .. micro_batches - 1).
  using RoutedExpertsFactory = std::function<std::unique_ptr<model::RoutedExperts>(int lane)>;

  // `model` is not owned; `pool` is the node's bounded cache.
  Scheduler(model::DeepseekModel* model, std::shared_ptr<model::LatentBlockPool> pool,
            RoutedExpertsFactory routed_experts, SchedulerOptions options);
  ~Scheduler();  // Stop()

  // Queues a sequence; its events go to `events`. Errors: InvalidArgument (empty prompt, token
  // id outside the vocabulary, zero budget, bad sampling values, more cache than the node has),
  // AlreadyExists for a duplicate id.
  absl::Status Add(const moemesh::v1::AddSequenceRequest& request,
                   std::shared_ptr<EventQueue> events);
  // Aborts a sequence: its cache blocks are freed before the next step. False if unknown.
  bool Abort(const std::string& sequence_id);
  SchedulerStatus Status() const;
  void Stop();

 private:
  struct Sequence;
  // One sequence's share of a step: the tokens fed (a prompt chunk, or the one last token).
  struct StepWork {
    Sequence* sequence;
    std::span<const int32_t> tokens;
    bool samples;  // the step reaches the sequence's last known token: sample from its logits
  };
  void Loop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return stopping_ || !waiting_.empty() || running_count_ > 0;
  }
  // Ends every running sequence with an error (a step failed outside the model's own error
  // handling, e.g. out of memory while sampling); their cache blocks go back to the pool.
  void FailRunning(const std::string& error, uint32_t error_code);
  // Reserves cache room for every item of the step; preempts the newest other sequences when the
  // pool is full (they wait at the head of the queue and later recompute their tokens). Drops
  // the work of preempted sequences.
  void ReserveOrPreempt(std::vector<StepWork>& work);
  void Admit() ABSL_LOCKS_EXCLUDED(mutex_);
  void RunStep() ABSL_LOCKS_EXCLUDED(mutex_);
  void Finish(Sequence& sequence, moemesh::v1::SequenceEvent::FinishReason reason,
              const std::string& error = "", uint32_t error_code = 0);

  model::DeepseekModel* model_;
  std::shared_ptr<model::LatentBlockPool> pool_;
  SchedulerOptions options_;
  std::vector<std::unique_ptr<model::RoutedExperts>> lanes_;
  std::vector<std::vector<float>> lane_logits_;  // [lane]: its step's logits (reused)

  LaneThreads lane_threads_;
  mutable absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, bool> aborted_ ABSL_GUARDED_BY(mutex_);  // id -> abort requested
  int running_count_ ABSL_GUARDED_BY(mutex_) = 0;                // running_.size(), for Status
  int64_t preemptions_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<std::unique_ptr<Sequence>> running_;  // the scheduler thread's only
  std::thread thread_;
};

}  // namespace moemesh::attention_node
