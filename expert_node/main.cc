// moemesh-expert-node: holds the routed experts its placement share names and serves
// ExpertService.Dispatch. Registers with the router's control plane and follows its placement.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "core/comm/service_flags.h"
#include "core/kernels/cpu/threading.h"
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

int main(int argc, char** argv) {
  moemesh::comm::ParseServiceFlags(
      argc, argv,
      "moemesh-expert-node --model DIR --router HOST:PORT [--host H] [--port P] "
      "[--node-name NAME] [--dispatch-threads N]");
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "moemesh-expert-node: --model is required\n");
    return 2;
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
  auto metrics = moemesh::obs::StartMetricsEndpoint(options.host, absl::GetFlag(FLAGS_metrics_port));
  if (!metrics.ok()) {
    std::fprintf(stderr, "moemesh-expert-node: %s\n", metrics.status().ToString().c_str());
    return 1;
  }
  options.metrics = metrics->registry;
  if (metrics->exposer != nullptr) options.metrics_address = metrics->exposer->address();
  auto node = moemesh::expert_node::ExpertNode::Start(options);
  if (!node.ok()) {
    std::fprintf(stderr, "moemesh-expert-node: %s\n", node.status().ToString().c_str());
    return 1;
  }
  std::printf("moemesh-expert-node listening on %s\n", (*node)->address().c_str());
  if (metrics->exposer != nullptr) {
    std::printf("moemesh-expert-node metrics on %s\n", metrics->exposer->address().c_str());
  }
  std::fflush(stdout);
  const int signal = moemesh::comm::WaitForSignal(signals);
  std::fprintf(stderr, "moemesh-expert-node: signal %d, shutting down\n", signal);
  (*node)->Shutdown(/*grace_seconds=*/1.0);
  return 0;
}
