#include "expert_node/expert_service.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/comm/dispatch_codec.h"
#include "core/comm/grpc_server.h"
#include "core/kernels/cpu/elementwise.h"
#include "expert_node/expert_metrics.h"

namespace moemesh::expert_node {

std::vector<model::ExpertKey> ShareOf(const moemesh::v1::Placement& placement,
                                      const std::string& node_id) {
  std::vector<model::ExpertKey> share;
  for (const moemesh::v1::ExpertReplicas& replicas : placement.experts()) {
    for (const std::string& id : replicas.node_ids()) {
      if (id == node_id) {
        share.push_back({static_cast<int>(replicas.layer()), static_cast<int>(replicas.expert())});
        break;
      }
    }
  }
  std::sort(share.begin(), share.end());
  return share;
}

// A fixed pool running the experts of one request in parallel: Run(n, fn) calls fn(0..n-1) and
// returns when all are done. Requests from several streams share it (one Run at a time).
class ExpertService::Workers {
 public:
  explicit Workers(int threads) {
    for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~Workers() {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
    }
    for (auto& thread : threads_) thread.join();
  }
  void Run(int count, const std::function<void(int)>& fn) {
    if (threads_.empty() || count <= 1) {
      for (int i = 0; i < count; ++i) fn(i);
      return;
    }
    absl::MutexLock run_lock(&run_mutex_);
    {
      absl::MutexLock lock(&mutex_);
      fn_ = &fn;
      next_ = 0;
      count_ = count;
      done_ = 0;
    }
    Work();  // the calling thread helps
    absl::MutexLock lock(&mutex_);
    auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return done_ == count_; };
    mutex_.Await(absl::Condition(&all_done));
    fn_ = nullptr;
  }

 private:
  // Takes items until none are left.
  void Work() {
    while (true) {
      int item;
      const std::function<void(int)>* fn;
      {
        absl::MutexLock lock(&mutex_);
        if (fn_ == nullptr || next_ >= count_) return;
        item = next_++;
        fn = fn_;
      }
      (*fn)(item);
      absl::MutexLock lock(&mutex_);
      ++done_;
    }
  }
  void Loop() {
    while (true) {
      {
        absl::MutexLock lock(&mutex_);
        auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          return stopping_ || (fn_ != nullptr && next_ < count_);
        };
        mutex_.Await(absl::Condition(&has_work));
        if (stopping_) return;
      }
      Work();
    }
  }

  std::vector<std::thread> threads_;
  absl::Mutex run_mutex_;
  absl::Mutex mutex_;
  const std::function<void(int)>* fn_ ABSL_GUARDED_BY(mutex_) = nullptr;
  int next_ ABSL_GUARDED_BY(mutex_) = 0;
  int count_ ABSL_GUARDED_BY(mutex_) = 0;
  int done_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
};

ExpertService::ExpertService(const checkpoint::ModelConfig& config, int dispatch_threads)
    : config_(config), workers_(std::make_unique<Workers>(std::max(1, dispatch_threads))) {}

ExpertService::~ExpertService() = default;

void ExpertService::Install(std::shared_ptr<const model::ExpertShard> shard, uint64_t version) {
  absl::MutexLock lock(&mutex_);
  shard_ = std::move(shard);
  version_ = version;
}

uint64_t ExpertService::placement_version() const {
  absl::MutexLock lock(&mutex_);
  return version_;
}

std::shared_ptr<const model::ExpertShard> ExpertService::shard() const {
  absl::MutexLock lock(&mutex_);
  return shard_;
}

ExpertServiceCounters ExpertService::counters() const {
  absl::MutexLock lock(&mutex_);
  return counters_;
}

grpc::Status ExpertService::Dispatch(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<moemesh::v1::DispatchReply, moemesh::v1::DispatchRequest>* stream) {
  moemesh::v1::DispatchRequest request;
  while (stream->Read(&request)) {
    moemesh::v1::DispatchReply reply = Handle(request);
    if (!stream->Write(reply)) break;
  }
  return grpc::Status::OK;
}

moemesh::v1::DispatchReply ExpertService::Handle(const moemesh::v1::DispatchRequest& request) {
  using moemesh::v1::DispatchReply;
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<const model::ExpertShard> shard;
  DispatchReply reply;
  reply.set_dispatch_id(request.dispatch_id());
  {
    absl::MutexLock lock(&mutex_);
    shard = shard_;
    reply.set_placement_version(version_);
    ++counters_.dispatches;
  }
  auto invalid = [&](std::string error) {
    reply.set_code(DispatchReply::INVALID);
    reply.set_error(std::move(error));
    absl::MutexLock lock(&mutex_);
    ++counters_.invalid;
    return reply;
  };
  const int layer = static_cast<int>(request.layer());
  if (layer >= config_.num_hidden_layers || !config_.IsMoeLayer(layer)) {
    return invalid(absl::StrCat("layer ", layer, " is not an MoE layer"));
  }
  if (static_cast<int>(request.hidden_size()) != config_.hidden_size) {
    return invalid(absl::StrCat("hidden_size ", request.hidden_size(), ", the model's is ",
                                config_.hidden_size));
  }
  absl::StatusOr<comm::DispatchBatch> batch =
      comm::DispatchBatchFromRequest(request, config_.n_routed_experts);
  if (!batch.ok()) return invalid(std::string(batch.status().message()));

  std::vector<uint32_t> missing;
  for (const comm::ExpertSliceRows& slice : batch->slices) {
    if (shard == nullptr || !shard->Holds(layer, slice.expert)) missing.push_back(slice.expert);
  }
  if (!missing.empty()) {
    std::sort(missing.begin(), missing.end());
    reply.set_code(DispatchReply::NOT_HELD);
    reply.set_error(absl::StrCat("layer ", layer, " experts [", absl::StrJoin(missing, ", "),
                                 "] are not held here (placement version ",
                                 reply.placement_version(), ")"));
    reply.mutable_missing_experts()->Add(missing.begin(), missing.end());
    absl::MutexLock lock(&mutex_);
    ++counters_.not_held;
    return reply;
  }

  // Each expert on its gathered rows (possibly in parallel), then added in ascending expert id:
  // the same arithmetic as ExpertShard::ComputePartial.
  std::vector<const comm::ExpertSliceRows*> slices;
  for (const comm::ExpertSliceRows& slice : batch->slices) {
    if (!slice.rows.empty()) slices.push_back(&slice);
  }
  std::sort(slices.begin(), slices.end(),
            [](const auto* a, const auto* b) { return a->expert < b->expert; });
  const int64_t hidden_size = config_.hidden_size;
  const int64_t rows = batch->rows();
  std::vector<std::vector<float>> results(slices.size());
  std::vector<absl::Status> statuses(slices.size());
  workers_->Run(static_cast<int>(slices.size()), [&](int i) {
    const comm::ExpertSliceRows& slice = *slices[i];
    const int64_t count = static_cast<int64_t>(slice.rows.size());
    std::vector<float> gathered(static_cast<size_t>(count * hidden_size));
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(gathered.data() + r * hidden_size,
                  batch->hidden.data() + static_cast<int64_t>(slice.rows[r]) * hidden_size,
                  sizeof(float) * hidden_size);
    }
    results[i].resize(static_cast<size_t>(count * hidden_size));
    statuses[i] = shard->ComputeExpert(layer, slice.expert, gathered.data(), count,
                                       results[i].data());
  });
  std::vector<float> out(static_cast<size_t>(rows * hidden_size), 0.0f);
  uint64_t expert_rows = 0;
  for (size_t i = 0; i < slices.size(); ++i) {
    if (!statuses[i].ok()) return invalid(std::string(statuses[i].message()));
    const comm::ExpertSliceRows& slice = *slices[i];
    for (size_t r = 0; r < slice.rows.size(); ++r) {
      kernels::Axpy(hidden_size, slice.gate_weights[r], results[i].data() + r * hidden_size,
                    out.data() + static_cast<int64_t>(slice.rows[r]) * hidden_size);
    }
    expert_rows += slice.rows.size();
  }
  reply.set_code(DispatchReply::OK);
  reply.set_partial_sum(comm::FloatsToBytes(out.data(), out.size()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  reply.set_compute_seconds(seconds);
  if (observer_) {
    DispatchObservation observation;
    observation.layer = layer;
    for (const comm::ExpertSliceRows* slice : slices) {
      observation.expert_rows.emplace_back(slice->expert, slice->rows.size());
    }
    observation.compute_seconds = seconds;
    observation.bytes_in = request.ByteSizeLong();
    observation.bytes_out = reply.ByteSizeLong();
    observer_(observation);
  }
  absl::MutexLock lock(&mutex_);
  counters_.rows += rows;
  counters_.expert_rows += expert_rows;
  counters_.compute_seconds += seconds;
  return reply;
}

absl::StatusOr<std::unique_ptr<ExpertNode>> ExpertNode::Start(ExpertNodeOptions options) {
  std::unique_ptr<ExpertNode> node(new ExpertNode());
  node->options_ = std::move(options);
  auto checkpoint = checkpoint::Checkpoint::Open(node->options_.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  node->checkpoint_ = *std::move(checkpoint);
  node->service_ = std::make_unique<ExpertService>(node->checkpoint_->config(),
                                                   node->options_.dispatch_threads);
  if (node->options_.metrics != nullptr) {
    node->metrics_ = std::make_unique<ExpertNodeMetrics>(node->options_.metrics,
                                                         node->checkpoint_->config());
    node->metrics_->Watch(node->service_.get());
    ExpertNodeMetrics* metrics = node->metrics_.get();
    node->service_->SetDispatchObserver(
        [metrics](const DispatchObservation& observation) { metrics->OnDispatch(observation); });
  }
  const std::string bind = absl::StrCat(node->options_.host, ":", node->options_.port);
  node->server_ = comm::StartGrpcServer(bind, {node->service_.get()}, &node->port_);
  if (node->server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("expert node: cannot listen on ", bind));
  }
  comm::ControlClientOptions control;
  control.router_address = node->options_.router_address;
  control.heartbeat_interval_seconds = node->options_.heartbeat_interval_seconds;
  control.registration.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  control.registration.set_address(node->address());
  control.registration.set_preferred_id(node->options_.node_name);
  control.registration.set_metrics_address(node->options_.metrics_address);
  ExpertNode* self = node.get();
  node->control_ = comm::ControlClient::Start(
      std::move(control),
      [self](const moemesh::v1::Placement& placement) {
        absl::MutexLock lock(&self->mutex_);
        self->wanted_ = placement;
      },
      [self](moemesh::v1::HeartbeatRequest& request) {
        request.set_loaded_placement_version(self->service_->placement_version());
      });
  node->loader_ = std::thread([self] { self->LoaderLoop(); });
  return node;
}

ExpertNode::~ExpertNode() { Shutdown(); }

std::string ExpertNode::address() const { return absl::StrCat(options_.host, ":", port_); }

bool ExpertNode::WaitForLoadedVersion(uint64_t version, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (service_->placement_version() < version) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

void ExpertNode::LoaderLoop() {
  while (true) {
    moemesh::v1::Placement placement;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stopping_ || wanted_.has_value();
      };
      mutex_.Await(absl::Condition(&ready));
      if (stopping_) return;
      placement = *std::move(wanted_);
      wanted_.reset();
    }
    const std::vector<model::ExpertKey> share = ShareOf(placement, control_->node_id());
    std::shared_ptr<const model::ExpertShard> current = service_->shard();
    if (current != nullptr && current->HeldExperts() == share) {
      service_->Install(current, placement.version());  // same experts, new version
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    const uint64_t bytes_before = checkpoint_->BytesRead();
    auto shard = model::ExpertShard::Load(*checkpoint_, share);
    if (!shard.ok()) {
      std::fprintf(stderr, "moemesh-expert-node: loading placement version %llu failed: %s\n",
                   static_cast<unsigned long long>(placement.version()),
                   std::string(shard.status().message()).c_str());
      continue;  // keeps serving the old share; the version is not reported
    }
    std::fprintf(stderr,
                 "moemesh-expert-node %s: placement version %llu: %zu experts, %.1f MiB read in "
                 "%.2f s\n",
                 control_->node_id().c_str(), static_cast<unsigned long long>(placement.version()),
                 share.size(), (checkpoint_->BytesRead() - bytes_before) / 1048576.0,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    service_->Install(std::shared_ptr<const model::ExpertShard>(std::move(*shard)),
                      placement.version());
  }
}

void ExpertNode::Shutdown(double grace_seconds) {
  if (shut_down_) return;
  shut_down_ = true;
  if (control_ != nullptr) control_->Stop();
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (loader_.joinable()) loader_.join();
  if (server_ != nullptr) comm::ShutdownGrpcServer(server_.get(), grace_seconds);
}

}  // namespace moemesh::expert_node
