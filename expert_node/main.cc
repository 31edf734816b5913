// moemesh-expert-node: holds the routed experts its placement share names and serves
// ExpertService.Dispatch. Registers with the router's control plane and follows its placement.
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "expert_node/expert_service.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors shards)");
ABSL_FLAG(std::string, router, "127.0.0.1:50051", "host:port of the router's control plane");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on (and to register)");
ABSL_FLAG(int, port, 0, "port to listen on; 0 picks a free one (printed on stdout)");
ABSL_FLAG(std::string, node_name, "",
          "stable node name, registered as preferred_id (a restart gets the same experts)");
ABSL_FLAG(int, dispatch_threads, 1, "threads computing the experts of one dispatch");

// absl flag names use '_'; accept the documented '--node-name' / '--dispatch-threads' spellings.
static std::vector<char*> DashesToUnderscores(int argc, char** argv,
                                              std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  for (size_t i = 1; i < storage.size(); ++i) {
    std::string& arg = storage[i];
    if (arg == "--") break;
    if (arg.rfind("--", 0) != 0) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t j = 2; j < end; ++j) {
      if (arg[j] == '-') arg[j] = '_';
    }
  }
  std::vector<char*> result;
  for (std::string& arg : storage) result.push_back(arg.data());
  return result;
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "moemesh-expert-node --model DIR --router HOST:PORT [--host H] [--port P] "
      "[--node-name NAME] [--dispatch-threads N]");
  std::vector<std::string> storage;
  std::vector<char*> args = DashesToUnderscores(argc, argv, storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "moemesh-expert-node: --model is required\n");
    return 2;
  }
  // Block the stop signals in every thread; main waits for them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  moemesh::expert_node::ExpertNodeOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.router_address = absl::GetFlag(FLAGS_router);
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.node_name = absl::GetFlag(FLAGS_node_name);
  options.dispatch_threads = absl::GetFlag(FLAGS_dispatch_threads);
  auto node = moemesh::expert_node::ExpertNode::Start(options);
  if (!node.ok()) {
    std::fprintf(stderr, "moemesh-expert-node: %s\n", node.status().ToString().c_str());
    return 1;
  }
  std::printf("moemesh-expert-node listening on %s\n", (*node)->address().c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "moemesh-expert-node: signal %d, shutting down\n", signal);
  (*node)->Shutdown(/*grace_seconds=*/1.0);
  return 0;
}
