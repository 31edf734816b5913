// moemesh-expert-node: holds the routed experts its placement share names and serves
// ExpertService.Dispatch. Registers with the router's control plane and follows its placement.
#include <sched.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "core/comm/service_flags.h"
#include "core/comm/tls.h"
#include "core/kernels/cpu/threading.h"
#include "core/obs/log.h"
#include "expert_node/expert_service.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors shards)");
ABSL_FLAG(std::string, router, "127.0.0.1:50051", "host:port of the router's control plane");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on (and to register)");
ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one (printed on stdout)");
ABSL_FLAG(std::string, node_name, "",
          "stable node name, registered as preferred_id (a restart gets the same experts)");
ABSL_FLAG(int, dispatch_threads, 1, "threads computing the experts of one dispatch");
ABSL_FLAG(int, compute_threads, 1, "OpenBLAS/OpenMP threads per expert computation");
ABSL_FLAG(int, metrics_port, 0, "port of GET /metrics (Prometheus); 0 picks one, -1 disables");
ABSL_FLAG(int, max_experts_per_layer, 0,
          "capacity registered with the router: physical experts per MoE layer (0 = no limit)");
ABSL_FLAG(bool, batch_scheduling, false,
          "run this node's threads under SCHED_BATCH: a woken expert thread does not preempt "
          "whatever runs on its core (it waits for a free core or the next tick); for expert "
          "nodes sharing cores with the attention node that wakes them (moemesh up sets it)");
ABSL_FLAG(std::string, log_level, "",
          "debug, info, warn, error or off (default: MOEMESH_LOG_LEVEL or info)");

int main(int argc, char** argv) {
  moemesh::comm::ParseServiceFlags(
      argc, argv,
      "moemesh-expert-node --model DIR --router HOST:PORT [--host H] [--port P] "
      "[--node-name NAME] [--dispatch-threads N]");
  if (absl::Status status =
          moemesh::obs::InitLogging("moemesh-expert-node", absl::GetFlag(FLAGS_log_level));
      !status.ok()) {
    std::fprintf(stderr, "moemesh-expert-node: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "moemesh-expert-node: --model is required\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_batch_scheduling)) {
    // Before any thread starts: threads inherit the policy (sched(7): per thread).
    const sched_param param{};
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
      std::fprintf(stderr, "moemesh-expert-node: --batch-scheduling: sched_setscheduler: %s\n",
                   std::strerror(errno));
      return 2;
    }
  }
  // Several processes share the cores of a machine: no BLAS thread per core each by default.
  moemesh::kernels::SetComputeThreads(absl::GetFlag(FLAGS_compute_threads));
  const sigset_t signals = moemesh::comm::BlockServiceSignals();

  moemesh::expert_node::ExpertNodeOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.router_address = absl::GetFlag(FLAGS_router);
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.node_name = absl::GetFlag(FLAGS_node_name);
  options.dispatch_threads = absl::GetFlag(FLAGS_dispatch_threads);
  options.max_experts_per_layer = absl::GetFlag(FLAGS_max_experts_per_layer);
  auto metrics = moemesh::obs::StartMetricsEndpoint(options.host, absl::GetFlag(FLAGS_metrics_port));
  if (!metrics.ok()) {
    moemesh::obs::LogError("metrics endpoint failed error=\"{}\"", metrics.status().ToString());
    return 1;
  }
  options.metrics = metrics->registry;
  if (metrics->exposer != nullptr) options.metrics_address = metrics->exposer->address();
  auto node = moemesh::expert_node::ExpertNode::Start(options);
  if (!node.ok()) {
    moemesh::obs::LogError("start failed error=\"{}\"", node.status().ToString());
    return 1;
  }
  std::printf("moemesh-expert-node listening on %s\n", (*node)->address().c_str());
  if (metrics->exposer != nullptr) {
    std::printf("moemesh-expert-node metrics on %s\n", metrics->exposer->address().c_str());
  }
  std::fflush(stdout);
  moemesh::obs::LogInfo("expert node serving address={} node_name={} router={} tls={}",
                        (*node)->address(), options.node_name, options.router_address,
                        moemesh::comm::ServiceTlsEnabled() ? "mtls" : "plaintext");
  // SIGINT stops at once. SIGTERM (a pod eviction) drains: the router re-plans without this
  // node; it keeps serving until that placement is committed and no attention node still uses
  // the old one, then exits 0. A refused drain (the others cannot hold every expert) keeps it
  // serving and asking; a second SIGTERM or SIGINT stops it anyway.
  int signal = moemesh::comm::WaitForSignal(signals);
  if (signal == SIGTERM) {
    moemesh::obs::LogInfo("drain started (SIGTERM): asking the router to re-plan without this "
                          "node node={}",
                          (*node)->node_id());
    (*node)->Drain();
    const timespec poll = {0, 100 * 1000 * 1000};
    using DrainState = moemesh::v1::HeartbeatReply;
    DrainState::DrainState state = DrainState::DRAIN_NONE;
    std::string message;
    while (true) {
      const int next = sigtimedwait(&signals, nullptr, &poll);
      if (next > 0) {
        signal = next;
        moemesh::obs::LogWarn("drain interrupted, stopping now node={} signal={}",
                              (*node)->node_id(), next);
        break;
      }
      const DrainState::DrainState now = (*node)->DrainState(&message);
      if (now != state) {
        state = now;
        if (state == DrainState::DRAIN_REFUSED) {
          moemesh::obs::LogWarn("drain refused, still serving node={} reason=\"{}\"",
                                (*node)->node_id(), message);
        } else if (state == DrainState::DRAIN_IN_PROGRESS) {
          moemesh::obs::LogInfo("drain in progress node={} detail=\"{}\"", (*node)->node_id(),
                                message);
        }
      }
      if (state == DrainState::DRAINED) {
        moemesh::obs::LogInfo("drain finished, exiting node={} detail=\"{}\"",
                              (*node)->node_id(), message);
        break;
      }
    }
  } else {
    moemesh::obs::LogInfo("shutting down node={} signal={}", (*node)->node_id(), signal);
  }
  (*node)->Shutdown(/*grace_seconds=*/1.0);
  return 0;
}
