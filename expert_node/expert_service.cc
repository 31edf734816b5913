#include "expert_node/expert_service.h"

#include "core/obs/log.h"

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
#include "core/comm/grpc_status.h"
#include "core/comm/shm_mailbox.h"
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
    moemesh::v1::DispatchReply reply = Handle(request);  // takes the request's hidden bytes
    if (!stream->Write(reply)) break;
  }
  return grpc::Status::OK;
}

grpc::Status ExpertService::ServeSharedMemory(
    grpc::ServerContext* context, const moemesh::v1::AttachSharedMemoryRequest* request,
    grpc::ServerWriter<moemesh::v1::SharedMemoryEvent>* writer) {
  absl::StatusOr<std::unique_ptr<comm::MailboxServer>> mailbox =
      comm::MailboxServer::Attach(request->segment_name(), request->nonce());
  if (!mailbox.ok()) return comm::ToGrpcStatus(mailbox.status());
  moemesh::v1::SharedMemoryEvent attached;
  attached.set_attached(true);
  if (!writer->Write(attached)) return grpc::Status::OK;  // the caller is gone
  (*mailbox)->Serve(
      [this](absl::string_view bytes, char* out, size_t capacity) -> size_t {
        moemesh::v1::DispatchRequest request;
        moemesh::v1::DispatchReply reply;
        if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          reply.set_code(moemesh::v1::DispatchReply::INVALID);
          reply.set_error(absl::StrCat("unparsable dispatch request of ", bytes.size(), " bytes"));
        } else {
          reply = Handle(request);
        }
        size_t size = reply.ByteSizeLong();
        if (size > capacity) {
          const uint64_t id = reply.dispatch_id();
          reply.Clear();
          reply.set_dispatch_id(id);
          reply.set_code(moemesh::v1::DispatchReply::INVALID);
          reply.set_error(absl::StrCat("the reply of ", size, " bytes exceeds the ", capacity,
                                       "-byte shared-memory mailbox"));
          size = reply.ByteSizeLong();
        }
        reply.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out));
        return size;
      },
      [context] { return context->IsCancelled(); });
  return grpc::Status::OK;
}

moemesh::v1::DispatchReply ExpertService::Handle(moemesh::v1::DispatchRequest& request) {
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

  // Each expert on its gathered rows (possibly in parallel). The outputs go back unweighted, per
  // (row, expert), in request slice order: the attention node weights them and adds a row's
  // experts in ascending id, the same arithmetic as ExpertShard::ComputePartial in one process.
  const int64_t hidden_size = config_.hidden_size;
  const int64_t rows = batch->rows();
  const std::vector<comm::ExpertSliceRows>& slices_in_order = batch->slices;
  std::vector<size_t> offsets(slices_in_order.size() + 1, 0);
  for (size_t i = 0; i < slices_in_order.size(); ++i) {
    offsets[i + 1] = offsets[i] + slices_in_order[i].rows.size();
  }
  // Written in place into the reply's bytes (no copy into the message afterwards).
  comm::FloatBuffer out(offsets.back() * static_cast<size_t>(hidden_size));
  std::vector<absl::Status> statuses(slices_in_order.size());
  workers_->Run(static_cast<int>(slices_in_order.size()), [&](int i) {
    const comm::ExpertSliceRows& slice = slices_in_order[i];
    const int64_t count = static_cast<int64_t>(slice.rows.size());
    if (count == 0) return;
    std::vector<float> gathered(static_cast<size_t>(count * hidden_size));
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(gathered.data() + r * hidden_size,
                  batch->hidden.data() + static_cast<int64_t>(slice.rows[r]) * hidden_size,
                  sizeof(float) * hidden_size);
    }
    statuses[i] = shard->ComputeExpert(layer, slice.expert, gathered.data(), count,
                                       out.data() + offsets[i] * hidden_size);
  });
  uint64_t expert_rows = 0;
  std::vector<const comm::ExpertSliceRows*> slices;
  for (size_t i = 0; i < slices_in_order.size(); ++i) {
    if (!statuses[i].ok()) return invalid(std::string(statuses[i].message()));
    expert_rows += slices_in_order[i].rows.size();
    if (!slices_in_order[i].rows.empty()) slices.push_back(&slices_in_order[i]);
  }
  reply.set_expert_outputs(out.TakeBytes());
  reply.set_code(DispatchReply::OK);
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
    observation.rows = static_cast<uint64_t>(rows);
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
  control.registration.set_max_experts_per_layer(
      static_cast<uint32_t>(std::max(0, node->options_.max_experts_per_layer)));
  ExpertNode* self = node.get();
  // Registering again (the router restarted): what it holds and serves, so that the new router
  // adopts it instead of having it loaded again.
  control.registration_state = [self](moemesh::v1::RegisterRequest& request) {
    request.set_placement_version(self->service_->placement_version());
    std::shared_ptr<const model::ExpertShard> shard = self->service_->shard();
    if (shard == nullptr) return;
    moemesh::v1::HeldExperts* layer = nullptr;
    for (const model::ExpertKey& key : shard->HeldExperts()) {  // sorted by (layer, expert)
      if (layer == nullptr || static_cast<int>(layer->layer()) != key.first) {
        layer = request.add_held_experts();
        layer->set_layer(static_cast<uint32_t>(key.first));
      }
      layer->add_experts(static_cast<uint32_t>(key.second));
    }
  };
  control.on_heartbeat_reply = [self](const moemesh::v1::HeartbeatReply& reply) {
    self->OnHeartbeatReply(reply);
  };
  node->control_ = comm::ControlClient::Start(
      std::move(control),
      [self](const moemesh::v1::Placement& placement) {
        absl::MutexLock lock(&self->mutex_);
        if (placement.target()) return;
        self->committed_ = placement;
        self->dirty_ = true;
      },
      [self](moemesh::v1::HeartbeatRequest& request) {
        request.set_loaded_placement_version(self->service_->placement_version());
        std::shared_ptr<const model::ExpertShard> shard = self->service_->shard();
        request.set_held_experts(
            shard == nullptr ? 0 : static_cast<uint32_t>(shard->HeldExperts().size()));
        absl::MutexLock lock(&self->mutex_);
        request.set_draining(self->draining_);
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

void ExpertNode::OnHeartbeatReply(const moemesh::v1::HeartbeatReply& reply) {
  absl::MutexLock lock(&mutex_);
  if (reply.target_placement_version() != target_version_ ||
      reply.min_used_placement_version() != min_used_version_) {
    dirty_ = true;
  }
  target_version_ = reply.target_placement_version();
  min_used_version_ = reply.min_used_placement_version();
  if (reply.drain() != drain_state_ || reply.drain_message() != drain_message_) {
    drain_state_ = reply.drain();
    drain_message_ = reply.drain_message();
  }
}

void ExpertNode::Drain() {
  absl::MutexLock lock(&mutex_);
  draining_ = true;
  control_->HeartbeatSoon();
}

moemesh::v1::HeartbeatReply::DrainState ExpertNode::DrainState(std::string* message) {
  absl::MutexLock lock(&mutex_);
  if (message != nullptr) *message = drain_message_;
  return drain_state_;
}

moemesh::v1::HeartbeatReply::DrainState ExpertNode::WaitDrainChange(
    moemesh::v1::HeartbeatReply::DrainState seen, absl::Duration timeout, std::string* message) {
  absl::MutexLock lock(&mutex_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return drain_state_ != seen || stopping_;
  };
  mutex_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  if (message != nullptr) *message = drain_message_;
  return drain_state_;
}

void ExpertNode::LoaderLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_ || dirty_; };
      mutex_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(1));
      if (stopping_) return;
      dirty_ = false;
    }
    Reconcile();
  }
}

void ExpertNode::Reconcile() {
  const std::string node_id = control_->node_id();
  uint64_t target_version;
  {
    absl::MutexLock lock(&mutex_);
    target_version = target_version_;
    if (target_version == 0) target_.reset();
    if (target_.has_value() && target_->version() != target_version) target_.reset();
  }
  if (target_version != 0) {
    bool have;
    {
      absl::MutexLock lock(&mutex_);
      have = target_.has_value();
    }
    if (!have) {
      absl::StatusOr<moemesh::v1::Placement> fetched = control_->FetchTargetPlacement();
      absl::MutexLock lock(&mutex_);
      if (fetched.ok() && fetched->target() && fetched->version() == target_version_) {
        target_ = *std::move(fetched);
      } else {
        dirty_ = true;  // try again on the next pass
      }
    }
  }
  // Wanted: every placement version an attention node may still use, and the target. Shares
  // are kept by version (committed ones and targets, which become committed); the newest known
  // version <= min_used stands for the one in use then (assignments change only at commits,
  // and the share of a version this node missed is also that of a newer one it keeps).
  std::set<model::ExpertKey> wanted;
  std::vector<model::ExpertKey> committed_share, target_share;
  uint64_t committed_version = 0;
  std::optional<uint64_t> target_loaded_version;
  {
    absl::MutexLock lock(&mutex_);
    if (committed_.has_value()) {
      committed_version = committed_->version();
      committed_share = ShareOf(*committed_, node_id);
      committed_shares_[committed_version] = committed_share;
    }
    if (target_.has_value() && target_->version() > committed_version) {
      target_share = ShareOf(*target_, node_id);
      committed_shares_[target_->version()] = target_share;
      target_loaded_version = target_->version();
    }
    // A target that was abandoned (never committed) is used by no one.
    for (auto it = committed_shares_.upper_bound(committed_version);
         it != committed_shares_.end();) {
      if (target_loaded_version && it->first == *target_loaded_version) {
        ++it;
      } else {
        it = committed_shares_.erase(it);
      }
    }
    const uint64_t min_used = std::min(min_used_version_, committed_version);
    auto in_use = committed_shares_.upper_bound(min_used);
    if (in_use != committed_shares_.begin()) --in_use;  // newest <= min_used
    committed_shares_.erase(committed_shares_.begin(), in_use);
    for (const auto& [version, share] : committed_shares_) wanted.insert(share.begin(), share.end());
  }
  if (committed_version == 0) return;
  const std::vector<model::ExpertKey> wanted_list(wanted.begin(), wanted.end());
  std::shared_ptr<const model::ExpertShard> current = service_->shard();
  std::shared_ptr<const model::ExpertShard> next = current;
  if (current == nullptr || current->HeldExperts() != wanted_list) {
    const auto start = std::chrono::steady_clock::now();
    int64_t bytes = 0;
    auto shard = model::ExpertShard::Rebuild(*checkpoint_, current.get(), wanted_list, &bytes);
    if (!shard.ok()) {
      obs::LogError("loading experts failed node={} placement_version={} error=\"{}\"", node_id,
                    target_loaded_version.value_or(committed_version), std::string(shard.status().message()));
      absl::MutexLock lock(&mutex_);
      dirty_ = true;
      return;  // keeps serving what it holds; the version is not reported
    }
    const size_t before = current == nullptr ? 0 : current->HeldExperts().size();
    // (": placement version " is what the integration harness waits for after a restart.)
    const uint64_t loaded_version = target_loaded_version.value_or(committed_version);
    obs::LogInfo("expert node {}: placement version {} loaded node={} placement_version={} "
                 "experts={} previous_experts={} read_mib={:.1f} seconds={:.2f}",
                 node_id, loaded_version, node_id, loaded_version, wanted_list.size(), before,
                 bytes / 1048576.0,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (metrics_ != nullptr) metrics_->OnExpertsLoaded(bytes);
    next = std::shared_ptr<const model::ExpertShard>(std::move(*shard));
  }
  // The newest version whose whole share is held now.
  uint64_t version = service_->placement_version();
  auto holds = [&](const std::vector<model::ExpertKey>& share) {
    for (const model::ExpertKey& key : share) {
      if (!next->Holds(key.first, key.second)) return false;
    }
    return true;
  };
  if (holds(committed_share)) version = std::max(version, committed_version);
  if (target_loaded_version && holds(target_share)) version = std::max(version, *target_loaded_version);
  const bool changed = next != current || version != service_->placement_version();
  service_->Install(next, version);
  if (changed) control_->HeartbeatSoon();
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
  // (the loader may have been mid-load; nothing more is installed after this)
  if (server_ != nullptr) comm::ShutdownGrpcServer(server_.get(), grace_seconds);
}

}  // namespace moemesh::expert_node
