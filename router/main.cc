// moemesh-router: the OpenAI HTTP API plus the cluster's control plane (gRPC).
//
//   moemesh-router --model DIR [--host 127.0.0.1] [--port 0] [--control-port 0]
//                  [--attention-nodes 1] [--expert-nodes 1] [--served-model-name NAME]
//                  [--max-model-len N] [--request-timeout-seconds 600] [--chat-template FILE]
//                  [--api-key K | --api-key-file F] [--admin-api-key K] [--http-* limits]
//                  [--redundant-experts R] [--rebalance-interval S] [--rebalance-min-gain G]
//                  [--failover-timeout-seconds 30] [--min-replicas K]
//                  [--expert-recovery-timeout 120]
//
// Prints (and flushes) "moemesh-router control listening on HOST:PORT" and
// "moemesh-router http listening on HOST:PORT" once both servers accept; runs until SIGINT or
// SIGTERM.
#include <signal.h>
#include <sys/resource.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>
#include <algorithm>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "core/comm/service_flags.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint/model_config.h"
#include "core/comm/grpc_server.h"
#include "core/obs/log.h"
#include "router/api_auth.h"
#include "router/attention_client.h"
#include "router/control_plane.h"
#include "router/http_server.h"
#include "router/openai_api.h"
#include "router/placement_routes.h"
#include "router/router_metrics.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json, tokenizer.json, tokenizer_config.json)");
ABSL_FLAG(std::string, host, "127.0.0.1", "address the HTTP and control servers bind");
ABSL_FLAG(int, port, 0, "HTTP port (0 picks one)");
ABSL_FLAG(int, control_port, 0, "control-plane gRPC port (0 picks one)");
ABSL_FLAG(int, attention_nodes, 1, "attention nodes expected before /ready");
ABSL_FLAG(int, expert_nodes, 1, "expert nodes the placement spreads the experts over");
ABSL_FLAG(std::string, served_model_name, "", "model name in the API (default: the model dir's basename)");
ABSL_FLAG(int64_t, max_model_len, 0, "context length, prompt plus completion (default: max_position_embeddings)");
ABSL_FLAG(std::string, chat_template, "",
          "Jinja chat template file to use instead of tokenizer_config.json's chat_template "
          "(e.g. deploy/templates/deepseek-r1-tools.jinja)");
ABSL_FLAG(double, request_timeout_seconds, 600, "a request still running after this fails (504)");
ABSL_FLAG(int, http_threads, 4, "HTTP I/O (event-loop) threads; open streams hold no thread");
ABSL_FLAG(int, http_max_connections, 8192, "open HTTP connections served; more get 503");
ABSL_FLAG(int, http_backlog, 4096, "listen backlog of the HTTP port (capped by net.core.somaxconn)");
ABSL_FLAG(double, http_header_timeout_seconds, 10, "a request's headers must arrive within this");
ABSL_FLAG(double, http_body_timeout_seconds, 60, "a request's body must arrive within this");
ABSL_FLAG(double, http_idle_timeout_seconds, 75, "an idle keep-alive connection is closed after this");
ABSL_FLAG(std::string, http_tls_cert, "", "PEM certificate chain: serve HTTPS on --port (with --http-tls-key)");
ABSL_FLAG(std::string, http_tls_key, "", "PEM private key of --http-tls-cert");
ABSL_FLAG(std::vector<std::string>, api_key, {},
          "API keys (comma-separated, repeatable) required on /v1/* as 'Authorization: Bearer'; "
          "also MOEMESH_API_KEY (comma-separated) and --api-key-file");
ABSL_FLAG(std::string, api_key_file, "", "file with one API key per line ('#' comments)");
ABSL_FLAG(std::vector<std::string>, admin_api_key, {},
          "keys for admin endpoints (/admin/*, /v1/placement/*); also MOEMESH_ADMIN_API_KEY");
ABSL_FLAG(bool, protect_operations, false,
          "require an API key on /health, /ready, /metrics and /dashboard too");
ABSL_FLAG(std::string, log_level, "", "debug, info, warn, error or off (default: MOEMESH_LOG_LEVEL or info)");
ABSL_FLAG(double, failover_timeout_seconds, 30,
          "a sequence whose attention node is lost waits this long for another one to continue it");
ABSL_FLAG(double, load_window_seconds, 60,
          "window of the 'recent' expert load and of moemesh_layer_balancedness");
ABSL_FLAG(int, redundant_experts, 0,
          "redundant physical experts per MoE layer beyond one per logical expert");
ABSL_FLAG(int, min_replicas, 1,
          "every logical expert on at least this many expert nodes (2 survives any single node)");
ABSL_FLAG(double, expert_recovery_timeout, 120,
          "a request whose experts have no live node waits this many seconds for the router to "
          "re-place them (or a node to join) before failing with 503");
ABSL_FLAG(double, rebalance_interval, 0,
          "re-plan the placement from the recent load every this many seconds (0 = never on a "
          "timer; joins, drains and POST /v1/placement/rebalance still re-plan)");
ABSL_FLAG(double, rebalance_min_gain, 0.05,
          "a timer re-plan is applied only when it raises the predicted mean balancedness by this");

int main(int argc, char** argv) {
  moemesh::comm::ParseServiceFlags(
      argc, argv,
      "moemesh-router --model DIR [--host H] [--port P] [--control-port C] "
      "[--attention-nodes A] [--expert-nodes E] [--served-model-name NAME] [--max-model-len N] "
      "[--chat-template FILE]");
  if (absl::Status status = moemesh::obs::InitLogging("moemesh-router", absl::GetFlag(FLAGS_log_level));
      !status.ok()) {
    std::cerr << "moemesh-router: " << status.message() << "\n";
    return 2;
  }
  auto api_keys = moemesh::router::CollectApiKeys(
      absl::GetFlag(FLAGS_api_key), absl::GetFlag(FLAGS_api_key_file), std::getenv("MOEMESH_API_KEY"));
  auto admin_keys = moemesh::router::CollectApiKeys(absl::GetFlag(FLAGS_admin_api_key), "",
                                                    std::getenv("MOEMESH_ADMIN_API_KEY"));
  if (!api_keys.ok() || !admin_keys.ok()) {
    std::cerr << "moemesh-router: " << (api_keys.ok() ? admin_keys.status() : api_keys.status()).message()
              << "\n";
    return 2;
  }
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) {
    std::cerr << "moemesh-router: --model DIR is required\n";
    return 2;
  }
  auto model = moemesh::router::LoadModel(model_dir, absl::GetFlag(FLAGS_served_model_name),
                                          absl::GetFlag(FLAGS_max_model_len),
                                          absl::GetFlag(FLAGS_chat_template));
  if (!model.ok()) {
    std::cerr << "moemesh-router: " << model.status() << "\n";
    return 1;
  }
  auto config = moemesh::checkpoint::LoadModelConfig(model_dir + "/config.json");
  if (!config.ok()) {
    std::cerr << "moemesh-router: " << config.status() << "\n";
    return 1;
  }

  // Thousands of open streams need as many descriptors: take the hard limit.
  if (rlimit files{}; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  // SIGINT / SIGTERM are taken by WaitForSignal below; block them before any thread starts.
  const sigset_t stop_signals = moemesh::comm::BlockServiceSignals();

  moemesh::router::ControlPlaneOptions control_options;
  control_options.expected_attention_nodes = absl::GetFlag(FLAGS_attention_nodes);
  control_options.expected_expert_nodes = absl::GetFlag(FLAGS_expert_nodes);
  moemesh::router::ExpertLoadOptions load_options;
  load_options.window = absl::Seconds(absl::GetFlag(FLAGS_load_window_seconds));
  moemesh::router::ExpertLoadTracker expert_load(*config, load_options);
  control_options.on_heartbeat = [&expert_load](const moemesh::v1::HeartbeatRequest& heartbeat) {
    expert_load.OnHeartbeat(heartbeat);
  };
  control_options.redundant_experts = absl::GetFlag(FLAGS_redundant_experts);
  control_options.min_replicas = absl::GetFlag(FLAGS_min_replicas);
  if (control_options.min_replicas < 1) {
    std::cerr << "moemesh-router: --min-replicas must be at least 1\n";
    return 2;
  }
  control_options.rebalance_interval_seconds = absl::GetFlag(FLAGS_rebalance_interval);
  control_options.rebalance_min_gain = absl::GetFlag(FLAGS_rebalance_min_gain);
  control_options.load_window = [&expert_load] { return expert_load.RecentLoad(); };
  moemesh::router::ControlPlane control(*config, control_options);
  moemesh::router::RouterMetrics metrics(&control, &expert_load);

  const std::string host = absl::GetFlag(FLAGS_host);
  moemesh::comm::EnableHealthAndReflection();
  int control_port = 0;
  std::unique_ptr<grpc::Server> control_server = moemesh::comm::StartGrpcServer(
      absl::StrCat(host, ":", absl::GetFlag(FLAGS_control_port)), {&control}, &control_port,
      moemesh::comm::kControlMaxMessageBytes);
  if (!control_server) {
    std::cerr << "moemesh-router: cannot start the control plane on " << host << ":"
              << absl::GetFlag(FLAGS_control_port) << "\n";
    return 1;
  }

  moemesh::router::GrpcAttentionBackendOptions backend_options;
  backend_options.ready = [&control]() -> absl::Status {
    std::string why;
    if (control.Ready(&why)) return absl::OkStatus();
    return absl::UnavailableError(why.empty() ? "the cluster is not ready" : why);
  };
  // An expert without a live node: wait (bounded) for the router to re-place it, then 503.
  const absl::Duration recovery = absl::Seconds(absl::GetFlag(FLAGS_expert_recovery_timeout));
  backend_options.check_experts = [&control, recovery]() -> absl::Status {
    const absl::Time give_up = absl::Now() + recovery;
    while (true) {
      std::optional<std::pair<int, int>> unserved = control.FirstUnservedExpert();
      if (!unserved) return absl::OkStatus();
      if (absl::Now() >= give_up) {
        return absl::UnavailableError(absl::StrCat(
            "no healthy expert node holds expert ", unserved->second, " of layer ",
            unserved->first, " (waited ", absl::FormatDuration(recovery),
            " for it to be re-placed or a node to join)"));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  };
  backend_options.pick_node =
      [&control](uint64_t reserve,
                 const std::vector<std::string>& avoid) -> absl::StatusOr<std::string> {
    auto node = control.PickAttentionNode(reserve, avoid);
    if (!node) return absl::UnavailableError("no healthy attention node");
    return node->address;
  };
  // Attention-node loss: sequences move to another node (prompt + streamed tokens).
  backend_options.failed_nodes = [&control] {
    std::vector<std::string> failed;
    for (const auto& node : control.AttentionNodes()) {
      if (!node.healthy) failed.push_back(node.address);
    }
    return failed;
  };
  backend_options.failover_timeout = absl::Seconds(absl::GetFlag(FLAGS_failover_timeout_seconds));
  backend_options.on_resubmit = [&metrics](const std::string& reason, int64_t tokens) {
    metrics.OnSequenceResubmitted(reason, tokens);
  };
  backend_options.on_failover_exhausted = [&metrics] { metrics.OnFailoverExhausted(); };
  moemesh::router::GrpcAttentionBackend backend(std::move(backend_options));

  moemesh::router::HttpServerOptions http_options;
  http_options.host = host;
  http_options.port = absl::GetFlag(FLAGS_port);
  http_options.request_timeout_seconds = absl::GetFlag(FLAGS_request_timeout_seconds);
  http_options.threads = absl::GetFlag(FLAGS_http_threads);
  http_options.observer = &metrics;
  http_options.routes = metrics.Routes();
  for (moemesh::router::HttpRoute& route : moemesh::router::PlacementRoutes(&control)) {
    http_options.routes.push_back(std::move(route));
  }
  http_options.transport.max_connections = absl::GetFlag(FLAGS_http_max_connections);
  http_options.transport.backlog = absl::GetFlag(FLAGS_http_backlog);
  http_options.transport.header_timeout_seconds = absl::GetFlag(FLAGS_http_header_timeout_seconds);
  http_options.transport.body_timeout_seconds = absl::GetFlag(FLAGS_http_body_timeout_seconds);
  http_options.transport.idle_timeout_seconds = absl::GetFlag(FLAGS_http_idle_timeout_seconds);
  http_options.transport.tls_cert_file = absl::GetFlag(FLAGS_http_tls_cert);
  http_options.transport.tls_key_file = absl::GetFlag(FLAGS_http_tls_key);
  http_options.auth.api_keys = *std::move(api_keys);
  http_options.auth.admin_api_keys = *std::move(admin_keys);
  http_options.auth.protect_operations = absl::GetFlag(FLAGS_protect_operations);
  if (!http_options.auth.enabled()) {
    moemesh::obs::LogWarn("no --api-key given: the HTTP API is open to anyone who can reach it");
  }
  moemesh::router::HttpServer http((*model)->info, &backend, http_options);
  if (absl::Status status = http.Start(); !status.ok()) {
    std::cerr << "moemesh-router: " << status << "\n";
    control_server->Shutdown();
    return 1;
  }

  std::cout << "moemesh-router control listening on " << host << ":" << control_port << "\n"
            << "moemesh-router http listening on " << host << ":" << http.port() << "\n"
            << std::flush;

  const int signal_number = moemesh::comm::WaitForSignal(stop_signals);
  std::cerr << "moemesh-router: signal " << signal_number << ", stopping\n";
  http.Stop();
  control_server->Shutdown();
  return 0;
}
