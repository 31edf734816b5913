#include "router/attention_client.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/comm/tls.h"

namespace moemesh::router {
namespace {

class GrpcSequence : public SequenceHandle {
 public:
  GrpcSequence(moemesh::v1::AttentionService::Stub* stub, std::string address,
               moemesh::v1::AddSequenceRequest request, SequenceObserver observer) {
    thread_ = std::thread([this, stub, address = std::move(address), request = std::move(request),
                           observer = std::move(observer)] {
      std::unique_ptr<grpc::ClientReader<moemesh::v1::SequenceEvent>> reader =
          stub->AddSequence(&context_, request);
      moemesh::v1::SequenceEvent event;
      while (reader->Read(&event)) observer.on_event(event);
      grpc::Status status = reader->Finish();
      absl::Status result;
      if (status.ok()) {
        result = absl::OkStatus();
      } else if (cancelled_.load()) {
        result = absl::CancelledError("cancelled by the router");
      } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        result = absl::UnavailableError(
            absl::StrCat("attention node ", address, " unavailable: ", status.error_message()));
      } else {
        result = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                              absl::StrCat("attention node ", address, ": ", status.error_message()));
      }
      observer.on_end(result);
    });
  }

  ~GrpcSequence() override {
    Cancel();
    thread_.join();
  }

  void Cancel() override {
    if (!cancelled_.exchange(true)) context_.TryCancel();
  }

 private:
  grpc::ClientContext context_;
  std::atomic<bool> cancelled_{false};
  std::thread thread_;  // last: started after the members it uses
};

}  // namespace

GrpcAttentionBackend::GrpcAttentionBackend(GrpcAttentionBackendOptions options)
    : options_(std::move(options)) {}

absl::Status GrpcAttentionBackend::Ready() {
  return options_.ready ? options_.ready() : absl::OkStatus();
}

moemesh::v1::AttentionService::Stub* GrpcAttentionBackend::StubFor(const std::string& address) {
  absl::MutexLock lock(&mutex_);
  auto& stub = stubs_[address];
  if (!stub) {
    stub = moemesh::v1::AttentionService::NewStub(comm::CreateServiceChannel(address));
  }
  return stub.get();
}

absl::StatusOr<std::unique_ptr<SequenceHandle>> GrpcAttentionBackend::AddSequence(
    const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) {
  if (options_.check_experts) {
    if (absl::Status status = options_.check_experts(); !status.ok()) return status;
  }
  if (!options_.pick_node) return absl::UnavailableError("no attention node is known");
  // The prompt's cache plus a bounded share of the completion: reserving a default max_tokens
  // (the whole context) would make every node look full after one request each.
  constexpr uint64_t kReservedDecodeTokens = 512;
  const uint64_t reserve = static_cast<uint64_t>(request.prompt_token_ids_size()) +
                           std::min<uint64_t>(request.max_new_tokens(), kReservedDecodeTokens);
  absl::StatusOr<std::string> address = options_.pick_node(reserve);
  if (!address.ok()) return address.status();
  return std::unique_ptr<SequenceHandle>(
      new GrpcSequence(StubFor(*address), *address, request, std::move(observer)));
}

}  // namespace moemesh::router
