// moemesh-attention-node: embeddings, attention with the paged latent KV cache, dense layers,
// the MoE gate and shared expert, lm_head and sampling; dispatches routed experts to the expert
// nodes its placement names. Serves AttentionService to the router.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "attention_node/attention_service.h"
#include "core/comm/service_flags.h"
#include "core/comm/tls.h"
#include "core/obs/log.h"
#include "core/obs/metrics.h"
#include "core/kernels/cpu/threading.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors shards)");
ABSL_FLAG(std::string, router, "127.0.0.1:50051", "host:port of the router's control plane");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on (and to register)");
ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one (printed on stdout)");
ABSL_FLAG(std::string, node_name, "", "stable node name, registered as preferred_id");
ABSL_FLAG(int64_t, cache_tokens, 65536, "latent KV cache capacity in token positions");
ABSL_FLAG(int, cache_block_size, 64, "positions per cache block");
ABSL_FLAG(int64_t, max_batch_tokens, 512, "new tokens per step (decode + chunked prefill)");
ABSL_FLAG(int, max_running, 256, "sequences running at once");
ABSL_FLAG(int, micro_batches, 2, "concurrent micro-batches per step (1 = no overlap)");
ABSL_FLAG(double, dispatch_timeout_seconds, 10.0,
          "expert round trip deadline ceiling (the deadline adapts to observed round trips)");
ABSL_FLAG(double, dispatch_timeout_floor_seconds, 1.0,
          "the adaptive expert round trip deadline is never below this");
ABSL_FLAG(bool, shared_memory_dispatch, true,
          "reach expert nodes on this host through shared-memory mailboxes (the others, e.g. in "
          "another pod or on another machine, over the gRPC stream)");
ABSL_FLAG(double, expert_recovery_timeout, 120,
          "a step whose experts have no live node waits this long for them to be re-placed");
ABSL_FLAG(int, compute_threads, 1, "OpenBLAS/OpenMP threads per micro-batch");
ABSL_FLAG(int, metrics_port, 0, "port of GET /metrics (Prometheus); 0 picks one, -1 disables");
ABSL_FLAG(double, drain_timeout, 20,
          "on SIGTERM: seconds running sequences may take to finish before the rest are handed "
          "back to the router (which continues them on another attention node)");
ABSL_FLAG(std::string, log_level, "",
          "debug, info, warn, error or off (default: MOEMESH_LOG_LEVEL or info)");

int main(int argc, char** argv) {
  moemesh::comm::ParseServiceFlags(
      argc, argv,
      "moemesh-attention-node --model DIR --router HOST:PORT [--host H] [--port P] "
      "[--node-name NAME] [--cache-tokens N] [--max-batch-tokens N] [--micro-batches M] "
      "[--drain-timeout S]");
  if (absl::Status status =
          moemesh::obs::InitLogging("moemesh-attention-node", absl::GetFlag(FLAGS_log_level));
      !status.ok()) {
    std::fprintf(stderr, "moemesh-attention-node: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "moemesh-attention-node: --model is required\n");
    return 2;
  }
  moemesh::kernels::SetComputeThreads(absl::GetFlag(FLAGS_compute_threads));
  // SIGUSR1 prints the dispatch statistics (for bench/cluster).
  const sigset_t signals = moemesh::comm::BlockServiceSignals({SIGUSR1});

  moemesh::attention_node::AttentionNodeOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.router_address = absl::GetFlag(FLAGS_router);
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.node_name = absl::GetFlag(FLAGS_node_name);
  options.cache_tokens = absl::GetFlag(FLAGS_cache_tokens);
  options.cache_block_size = absl::GetFlag(FLAGS_cache_block_size);
  options.scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.scheduler.max_running = absl::GetFlag(FLAGS_max_running);
  options.scheduler.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  options.dispatch_timeout_seconds = absl::GetFlag(FLAGS_dispatch_timeout_seconds);
  options.dispatch_timeout_floor_seconds = absl::GetFlag(FLAGS_dispatch_timeout_floor_seconds);
  options.expert_recovery_timeout_seconds = absl::GetFlag(FLAGS_expert_recovery_timeout);
  options.shared_memory_dispatch = absl::GetFlag(FLAGS_shared_memory_dispatch);
  if (options.cache_tokens <= 0 || options.cache_block_size <= 0 ||
      options.scheduler.max_batch_tokens <= 0) {
    std::fprintf(stderr,
                 "moemesh-attention-node: --cache-tokens, --cache-block-size and "
                 "--max-batch-tokens must be positive\n");
    return 2;
  }
  auto metrics = moemesh::obs::StartMetricsEndpoint(options.host, absl::GetFlag(FLAGS_metrics_port));
  if (!metrics.ok()) {
    moemesh::obs::LogError("metrics endpoint failed error=\"{}\"", metrics.status().ToString());
    return 1;
  }
  options.metrics = metrics->registry;
  if (metrics->exposer != nullptr) options.metrics_address = metrics->exposer->address();
  auto node = moemesh::attention_node::AttentionNode::Start(options);
  if (!node.ok()) {
    moemesh::obs::LogError("start failed error=\"{}\"", node.status().ToString());
    return 1;
  }
  std::printf("moemesh-attention-node listening on %s\n", (*node)->address().c_str());
  if (metrics->exposer != nullptr) {
    std::printf("moemesh-attention-node metrics on %s\n", metrics->exposer->address().c_str());
  }
  std::fflush(stdout);
  moemesh::obs::LogInfo("attention node serving address={} node_name={} router={} tls={}",
                        (*node)->address(), options.node_name, options.router_address,
                        moemesh::comm::ServiceTlsEnabled() ? "mtls" : "plaintext");
  // Cumulative MoE dispatch round trips over all micro-batch lanes.
  auto print_statistics = [&] {
    const moemesh::attention_node::DispatchStatistics s = (*node)->dispatch_statistics();
    std::fprintf(stderr,
                 "moemesh-attention-node: dispatch statistics layer_dispatches=%llu "
                 "node_round_trips=%llu round_trip_seconds=%.6f failures=%llu "
                 "failovers_unreachable=%llu failovers_not_held=%llu redispatched_rows=%llu "
                 "detection_seconds_max=%.6f recovery_waits=%llu recovery_wait_seconds=%.6f\n",
                 static_cast<unsigned long long>(s.layer_dispatches),
                 static_cast<unsigned long long>(s.node_round_trips), s.round_trip_seconds,
                 static_cast<unsigned long long>(s.failures),
                 static_cast<unsigned long long>(s.failovers_unreachable),
                 static_cast<unsigned long long>(s.failovers_not_held),
                 static_cast<unsigned long long>(s.redispatched_rows), s.detection_seconds_max,
                 static_cast<unsigned long long>(s.recovery_waits), s.recovery_wait_seconds);
    std::fflush(stderr);
  };
  int signal;
  while ((signal = moemesh::comm::WaitForSignal(signals)) == SIGUSR1) print_statistics();
  print_statistics();
  if (signal == SIGTERM) {
    // Graceful leave (a pod being deleted, a rolling update): no new sequences, the running
    // ones finish or are handed back; nothing is lost.
    const double drain_seconds = std::max(0.0, absl::GetFlag(FLAGS_drain_timeout));
    moemesh::obs::LogInfo("drain started (SIGTERM) node={} timeout_seconds={:.1f}",
                          (*node)->node_id(), drain_seconds);
    const int handed_over = (*node)->Drain(absl::Seconds(drain_seconds));
    moemesh::obs::LogInfo("drain finished node={} handed_back={}", (*node)->node_id(),
                          handed_over);
    return 0;
  }
  moemesh::obs::LogInfo("shutting down node={} signal={}", (*node)->node_id(), signal);
  (*node)->Shutdown();
  return 0;
}
