// `moemesh up`: the whole cluster as local processes on loopback: one router, A attention nodes
// and E expert nodes. Waits for /ready, prints the URL, and stops every process it started on
// Ctrl-C (SIGINT/SIGTERM) or when the router exits. A node that exits while the cluster serves
// (an expert node drained with SIGTERM, or any node that dies) is reported and the rest keep
// serving.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/comm/throwaway_ca.h"
#include "httplib.h"
#include "tools/moemesh/arguments.h"
#include "tools/moemesh/commands.h"

namespace moemesh::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] =
    "usage: moemesh up --model DIR [--attention-nodes A] [--expert-nodes E] [--port P]\n"
    "                  [--host 127.0.0.1] [--log-dir DIR] [--cache-tokens N]\n"
    "                  [--ready-timeout-seconds S] [--served-model-name NAME]\n"
    "                  [--redundant-experts R] [--rebalance-interval S] [--min-replicas K]\n"
    "                  [--chat-template FILE]\n"
    "                  [--attention-compute-threads T] [--expert-compute-threads T]\n"
    "                  [--expert-dispatch-threads T]\n"
    "                  [--micro-batches M] [--no-shared-memory-dispatch]\n"
    "                  [--api-key K] [--api-key-file F] [--admin-api-key K]\n"
    "                  [--tls-ca F --tls-cert F --tls-key F | --insecure-plaintext]\n"
    "Starts moemesh-router, A moemesh-attention-node and E moemesh-expert-node processes\n"
    "(found beside this binary), waits until GET /ready answers 200, prints the URL, and runs\n"
    "until Ctrl-C or until the router exits; then it stops them all. A node that exits while\n"
    "serving (e.g. an expert node drained with `kill -TERM PID`) is reported; the rest serve on.\n"
    "The processes talk mTLS: with a throwaway CA generated in the log dir unless --tls-* files\n"
    "are given; --insecure-plaintext turns TLS off (development only). API keys go to the\n"
    "router (MOEMESH_API_KEY is passed on too).\n"
    "  --redundant-experts R   redundant physical experts per MoE layer (router flag)\n"
    "  --rebalance-interval S  re-plan the placement from the load every S seconds (0 = never)\n"
    "  --min-replicas K        every logical expert on at least K expert nodes (router flag;\n"
    "                          2 survives the loss of any one expert node)\n"
    "  --chat-template FILE    Jinja chat template for the router (instead of the checkpoint's)\n"
    "  --attention-compute-threads T  kernel threads per attention node (default: the cores;\n"
    "                          the attention node runs attention, the shared experts and the\n"
    "                          lm_head of every token, and idles while the experts compute)\n"
    "  --expert-compute-threads T     kernel threads per expert node (default: the cores / E,\n"
    "                          at least 1: the expert nodes compute at the same time)\n"
    "  --expert-dispatch-threads T    experts of one dispatch computed at once per expert node\n"
    "                          (default: the cores / expert compute threads: a node whose share\n"
    "                          of a token's experts is the larger one uses the cores the other\n"
    "                          node leaves idle)\n"
    "  --micro-batches M       concurrent micro-batches per attention-node step (default 1:\n"
    "                          every process here shares this machine's cores, so a second\n"
    "                          micro-batch would compute on the cores the experts use)\n"
    "  --no-shared-memory-dispatch    dispatch to the expert nodes over the gRPC stream (what\n"
    "                          nodes on other hosts get) instead of shared-memory mailboxes\n"
    "The expert nodes run under SCHED_BATCH (--batch-scheduling): when the attention node wakes\n"
    "them, they take a free core instead of preempting it.\n";

volatile sig_atomic_t stop_requested = 0;
void OnStopSignal(int) { stop_requested = 1; }

struct Child {
  std::string name;
  pid_t pid = -1;
  std::string log_path;
  bool expert = false;  // stopped with SIGINT: SIGTERM would drain it first
};

// A free loopback TCP port (bound then released; the child binds it right after).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

// Starts `arguments` with stdout and stderr appended to `log_path`.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& arguments, const std::string& log_path) {
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::close(log);
    }
    // The launcher handles Ctrl-C for everyone: children ignore the terminal's SIGINT.
    ::setpgid(0, 0);
    // And they go when the launcher goes, even if it is killed outright.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    std::vector<char*> argv;
    for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::perror(("exec " + arguments[0]).c_str());
    ::_exit(127);
  }
  return pid;
}

// "exited with status 1" / "was killed by signal 9", from a waitpid status.
std::string DescribeExit(int wait_status) {
  if (WIFSIGNALED(wait_status)) return absl::StrCat("was killed by signal ", WTERMSIG(wait_status));
  return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
}

std::string Tail(const std::string& path, size_t lines) {
  std::ifstream stream(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(stream, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "    " + all[i] + "\n";
  }
  return out;
}

void StopAll(std::vector<Child>& children) {
  for (const Child& child : children) {
    if (child.pid > 0) ::kill(child.pid, child.expert ? SIGINT : SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (Child& child : children) {
    while (child.pid > 0) {
      int status = 0;
      const pid_t done = ::waitpid(child.pid, &status, WNOHANG);
      if (done == child.pid || done < 0) {
        child.pid = -1;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(child.pid, SIGKILL);
        ::waitpid(child.pid, &status, 0);
        child.pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

// The first child that has exited, if any (and reaps it).
const Child* FindExited(std::vector<Child>& children, int* exit_status) {
  for (Child& child : children) {
    if (child.pid <= 0) continue;
    if (::waitpid(child.pid, exit_status, WNOHANG) == child.pid) {
      child.pid = -1;
      return &child;
    }
  }
  return nullptr;
}

// The router's API-key flags, from up's own.
std::vector<std::string> ApiKeyFlags(const ParsedArguments& parsed) {
  std::vector<std::string> flags;
  for (const char* name : {"api-key", "api-key-file", "admin-api-key"}) {
    if (auto value = parsed.Get(name)) {
      flags.push_back(absl::StrCat("--", name));
      flags.push_back(*value);
    }
  }
  return flags;
}

// The gRPC security flags every process gets (core/comm/tls.h): the given files, a throwaway CA
// generated in `log_dir` (the default), or --insecure-plaintext.
absl::StatusOr<std::vector<std::string>> SecurityFlags(const ParsedArguments& parsed,
                                                       const fs::path& log_dir,
                                                       const std::string& host) {
  if (parsed.Has("insecure-plaintext")) return std::vector<std::string>{"--insecure-plaintext"};
  std::string ca = parsed.Get("tls-ca").value_or(""), cert = parsed.Get("tls-cert").value_or(""),
              key = parsed.Get("tls-key").value_or("");
  if (ca.empty() && cert.empty() && key.empty()) {
    const fs::path dir = log_dir / "tls";
    fs::create_directories(dir);
    if (absl::Status status = comm::GenerateThrowawayCertificates(dir.string(), {host});
        !status.ok()) {
      return status;
    }
    ca = (dir / "ca.pem").string();
    cert = (dir / "node.pem").string();
    key = (dir / "node.key").string();
  }
  return std::vector<std::string>{"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key};
}

}  // namespace

int RunUp(const Arguments& arguments) {
  auto parsed = ParseArguments(arguments, {{"model"},
                                           {"attention-nodes"},
                                           {"expert-nodes"},
                                           {"port"},
                                           {"host"},
                                           {"log-dir"},
                                           {"cache-tokens"},
                                           {"ready-timeout-seconds"},
                                           {"served-model-name"},
                                           {"redundant-experts"},
                                           {"rebalance-interval"},
                                           {"min-replicas"},
                                           {"chat-template"},
                                           {"attention-compute-threads"},
                                           {"expert-compute-threads"},
                                           {"expert-dispatch-threads"},
                                           {"micro-batches"},
                                           {"no-shared-memory-dispatch", true},
                                           {"api-key"},
                                           {"api-key-file"},
                                           {"admin-api-key"},
                                           {"tls-ca"},
                                           {"tls-cert"},
                                           {"tls-key"},
                                           {"insecure-plaintext", true},
                                           {"help", true}});
  if (!parsed.ok()) {
    std::fprintf(stderr, "moemesh up: %s\n%s", std::string(parsed.status().message()).c_str(), kUsage);
    return 2;
  }
  if (parsed->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::optional<std::string> model = parsed->Get("model");
  auto attention_nodes = parsed->GetInt("attention-nodes", 1);
  auto expert_nodes = parsed->GetInt("expert-nodes", 2);
  auto port = parsed->GetInt("port", 8000);
  auto cache_tokens = parsed->GetInt("cache-tokens", 65536);
  auto ready_timeout = parsed->GetDouble("ready-timeout-seconds", 180);
  auto redundant_experts = parsed->GetInt("redundant-experts", 0);
  auto rebalance_interval = parsed->GetDouble("rebalance-interval", 0);
  auto min_replicas = parsed->GetInt("min-replicas", 1);
  auto micro_batches = parsed->GetInt("micro-batches", 1);
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  auto attention_threads = parsed->GetInt("attention-compute-threads", cores);
  auto expert_threads =
      parsed->GetInt("expert-compute-threads",
                     expert_nodes.ok() && *expert_nodes > 0 ? std::max<int64_t>(1, cores / *expert_nodes) : 1);
  auto dispatch_threads = parsed->GetInt(
      "expert-dispatch-threads",
      expert_threads.ok() && *expert_threads > 0 ? std::max<int64_t>(1, cores / *expert_threads) : 1);
  if (!model || !attention_nodes.ok() || !expert_nodes.ok() || !port.ok() || !cache_tokens.ok() ||
      !ready_timeout.ok() || !redundant_experts.ok() || !rebalance_interval.ok() ||
      !min_replicas.ok() || *min_replicas < 1 || *min_replicas > *expert_nodes ||
      !attention_threads.ok() || !expert_threads.ok() || *attention_threads < 1 ||
      *expert_threads < 1 || !dispatch_threads.ok() || *dispatch_threads < 1 ||
      !micro_batches.ok() || *micro_batches < 1 ||
      *attention_nodes < 1 || *expert_nodes < 1 || *port < 0 || *redundant_experts < 0 ||
      *rebalance_interval < 0) {
    std::fprintf(stderr,
                 "moemesh up: --model is required; node counts must be >= 1, "
                 "--redundant-experts and --rebalance-interval >= 0, compute threads and micro-batches >= 1, "
                 "1 <= --min-replicas <= --expert-nodes, numbers valid\n%s",
                 kUsage);
    return 2;
  }
  const std::string host = parsed->Get("host").value_or("127.0.0.1");
  const fs::path model_dir = fs::absolute(*model);
  if (!fs::exists(model_dir / "config.json")) {
    std::fprintf(stderr, "moemesh up: %s has no config.json\n", model_dir.c_str());
    return 1;
  }
  std::error_code error;
  const fs::path bin_dir = fs::read_symlink("/proc/self/exe", error).parent_path();
  for (const char* binary : {"moemesh-router", "moemesh-attention-node", "moemesh-expert-node"}) {
    if (!fs::exists(bin_dir / binary)) {
      std::fprintf(stderr, "moemesh up: %s not found beside %s (build all targets)\n", binary,
                   bin_dir.c_str());
      return 1;
    }
  }
  const fs::path log_dir = parsed->Get("log-dir").has_value()
                               ? fs::path(*parsed->Get("log-dir"))
                               : fs::temp_directory_path() / absl::StrCat("moemesh-up-", ::getpid());
  fs::create_directories(log_dir);
  absl::StatusOr<std::vector<std::string>> security = SecurityFlags(*parsed, log_dir, host);
  if (!security.ok()) {
    std::fprintf(stderr, "moemesh up: %s\n", std::string(security.status().message()).c_str());
    return 1;
  }

  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);

  const int http_port = *port == 0 ? FreePort() : static_cast<int>(*port);
  const int control_port = FreePort();
  const std::string control_address = absl::StrCat(host, ":", control_port);
  std::vector<Child> children;
  auto start = [&](const std::string& name, std::vector<std::string> command,
                   bool expert = false) -> bool {
    const std::string log_path = (log_dir / (name + ".log")).string();
    absl::StatusOr<pid_t> pid = Spawn(command, log_path);
    if (!pid.ok()) {
      std::fprintf(stderr, "moemesh up: cannot start %s\n", name.c_str());
      return false;
    }
    children.push_back({name, *pid, log_path, expert});
    std::fprintf(stderr, "moemesh up: started %s (pid %d)\n", name.c_str(), static_cast<int>(*pid));
    return true;
  };
  std::vector<std::string> router = {(bin_dir / "moemesh-router").string(),
                                     "--model", model_dir.string(),
                                     "--host", host,
                                     "--port", std::to_string(http_port),
                                     "--control-port", std::to_string(control_port),
                                     "--attention-nodes", std::to_string(*attention_nodes),
                                     "--expert-nodes", std::to_string(*expert_nodes),
                                     // A sequence may use at most one attention node's cache.
                                     "--max-model-len", std::to_string(*cache_tokens),
                                     "--redundant-experts", std::to_string(*redundant_experts),
                                     "--rebalance-interval", absl::StrCat(*rebalance_interval),
                                     "--min-replicas", std::to_string(*min_replicas)};
  if (auto name = parsed->Get("served-model-name")) {
    router.push_back("--served-model-name");
    router.push_back(*name);
  }
  if (auto chat_template = parsed->Get("chat-template")) {
    // The router reads it; an absolute path survives its working directory.
    router.push_back("--chat-template");
    router.push_back(fs::absolute(*chat_template).string());
  }
  auto secured = [&security](std::vector<std::string> command) {
    command.insert(command.end(), security->begin(), security->end());
    return command;
  };
  for (const std::string& flag : ApiKeyFlags(*parsed)) router.push_back(flag);
  bool started = start("router", secured(router));
  for (int64_t i = 0; started && i < *expert_nodes; ++i) {
    started = start(absl::StrCat("expert-", i),
                    secured({(bin_dir / "moemesh-expert-node").string(), "--model",
                             model_dir.string(), "--router", control_address, "--host", host,
                             "--node-name", absl::StrCat("expert-", i), "--compute-threads",
                             std::to_string(*expert_threads), "--dispatch-threads",
                             std::to_string(*dispatch_threads), "--batch-scheduling"}),
                    /*expert=*/true);
  }
  for (int64_t i = 0; started && i < *attention_nodes; ++i) {
    started = start(absl::StrCat("attention-", i),
                    secured({(bin_dir / "moemesh-attention-node").string(), "--model",
                             model_dir.string(), "--router", control_address, "--host", host,
                             "--node-name", absl::StrCat("attention-", i), "--cache-tokens",
                             std::to_string(*cache_tokens), "--compute-threads",
                             std::to_string(*attention_threads), "--micro-batches",
                             std::to_string(*micro_batches),
                             absl::StrCat("--shared-memory-dispatch=",
                                          parsed->Has("no-shared-memory-dispatch") ? "false"
                                                                                   : "true")}));
  }
  if (!started) {
    StopAll(children);
    return 1;
  }
  std::fprintf(stderr, "moemesh up: started %zu processes (logs in %s); waiting for /ready\n",
               children.size(), log_dir.c_str());

  httplib::Client client(host, http_port);
  client.set_connection_timeout(1, 0);
  client.set_read_timeout(2, 0);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(*ready_timeout * 1000));
  bool ready = false;
  std::string last_reason = "router not answering yet";
  int exit_status = 0;
  while (!ready && !stop_requested) {
    if (const Child* exited = FindExited(children, &exit_status)) {
      std::fprintf(stderr, "moemesh up: %s %s before the cluster was ready:\n%s",
                   exited->name.c_str(), DescribeExit(exit_status).c_str(),
                   Tail(exited->log_path, 20).c_str());
      StopAll(children);
      return 1;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "moemesh up: not ready after %.0f s (%s); stopping\n", *ready_timeout,
                   last_reason.c_str());
      StopAll(children);
      return 1;
    }
    if (auto response = client.Get("/ready")) {
      if (response->status == 200) {
        ready = true;
        break;
      }
      last_reason = response->body;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (ready) {
    std::printf("moemesh cluster ready: http://%s:%d/v1  (%lld attention, %lld expert nodes)\n",
                host.c_str(), http_port, static_cast<long long>(*attention_nodes),
                static_cast<long long>(*expert_nodes));
    std::fflush(stdout);
  }
  while (!stop_requested) {
    if (const Child* exited = FindExited(children, &exit_status)) {
      if (exited->name == "router") {
        std::fprintf(stderr, "moemesh up: the router %s; stopping the cluster:\n%s",
                     DescribeExit(exit_status).c_str(), Tail(exited->log_path, 20).c_str());
        StopAll(children);
        return 1;
      }
      int attention_left = 0, experts_left = 0;
      for (const Child& child : children) {
        if (child.pid <= 0 || child.name == "router") continue;
        (child.expert ? experts_left : attention_left) += 1;
      }
      const bool drained = exited->expert && WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0;
      std::fprintf(stderr,
                   "moemesh up: %s %s%s; the cluster keeps serving with %d attention and %d "
                   "expert nodes%s\n%s",
                   exited->name.c_str(), DescribeExit(exit_status).c_str(),
                   drained ? " (drained: its experts were re-placed first)" : "", attention_left,
                   experts_left,
                   drained ? "" : " (requests needing experts only it held wait or fail with 503)",
                   drained ? "" : Tail(exited->log_path, 20).c_str());
      std::fflush(stderr);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr, "moemesh up: stopping %zu processes\n", children.size());
  StopAll(children);
  return 0;
}

}  // namespace moemesh::cli
