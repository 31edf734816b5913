// A local moemesh cluster for integration tests: moemesh-router, A moemesh-attention-node and
// E moemesh-expert-node processes on loopback, ports chosen by the OS, logs in a temp dir, mTLS
// between them (ClusterOptions::tls).
//
//   Cluster cluster({.attention_nodes = 2, .expert_nodes = 3});
//   ASSERT_TRUE(cluster.ok()) << cluster.error();
//   HttpResult r = cluster.Post("/v1/completions", body);
//
// The destructor stops every process (SIGTERM, then SIGKILL after a deadline) and checks how
// each ended: a process that died before it was stopped, exited non-zero or by a signal after
// SIGTERM, or had to be killed fails the test (a crash on shutdown is a bug). When the current
// test failed, it prints the tail of every log. Children get PR_SET_PDEATHSIG, so a crashed test leaks nothing.
// Processes are forked from the calling thread and PDEATHSIG follows that thread: start and
// restart nodes from the test's main thread only.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moemesh::integration {

using nlohmann::json;

// Paths of the shared fixtures and the built binaries.
std::string FixtureDir();    // ../shared/fixtures/tiny-r1
std::string GoldensPath();   // ../shared/goldens/tiny-r1.json
const json& TinyR1Goldens();  // parsed once

struct ClusterOptions {
  std::string model_dir = "";  // checkpoint every process loads ("" = the tiny-r1 fixture)
  int attention_nodes = 1;
  int expert_nodes = 1;
  int64_t cache_tokens = 65536;  // per attention node
  int cache_block_size = 64;
  int micro_batches = 2;
  std::vector<std::string> router_flags = {};   // extra flags for moemesh-router
  std::vector<std::string> attention_flags = {};  // extra flags for every attention node
  std::vector<std::string> expert_flags = {};     // extra flags for every expert node
  double ready_timeout_seconds = 120;
  // mTLS between the processes (core/comm/tls.h; the test process's throwaway CA, see
  // TestCertificateDir) unless false: then --insecure-plaintext (the development path).
  bool tls = true;
};

// The test process's throwaway CA and certificate (core/comm/throwaway_ca.h: ca.pem, ca.key,
// node.pem, node.key), generated on first use into a temp dir removed at exit; "" (with `error`
// set) when generation failed. Every mTLS cluster of the process uses it.
const std::string& TestCertificateDir(std::string* error = nullptr);

// The gRPC security flags every service process of a cluster gets: --tls-ca/--tls-cert/--tls-key
// of TestCertificateDir() with `tls`, else --insecure-plaintext. Also configures this process's
// own channels (core/comm/tls.h) the same way. Fails when the certificates cannot be made.
absl::StatusOr<std::vector<std::string>> ServiceSecurityFlags(bool tls);

struct HttpResult {
  int status = 0;      // 0: no HTTP answer (connection failed, timed out, cancelled)
  std::string body;    // the whole body (for streams: the raw SSE text received)
  std::string error;   // transport error, when status == 0
  json Json() const;   // body parsed (null if it does not parse)
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options = {});
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const ClusterOptions& options() const { return options_; }

  int http_port() const { return http_port_; }
  const std::string& control_address() const { return control_address_; }
  const std::string& attention_address(int i) const { return attention_[i].address; }
  const std::string& expert_address(int i) const { return experts_[i].address; }
  // With tls: the PEM files every process uses (ca.pem, node.pem, node.key of
  // TestCertificateDir()).
  std::string tls_file(const std::string& name) const { return TestCertificateDir() + "/" + name; }
  const std::string& log_dir() const { return log_dir_; }
  // Process ids (-1 when not running), e.g. to read /proc/<pid>/status.
  pid_t attention_pid(int i) const { return attention_[i].pid; }
  pid_t expert_pid(int i) const { return experts_[i].pid; }

  // GET /ready until it answers 200 (true) or `seconds` pass (false; `last` gets the last body).
  bool WaitReady(double seconds, std::string* last = nullptr);

  // Expert node i: kill with `signal` and reap; restart with the same --node-name, on a new
  // port or (same_port) on the one it had, as a restarted pod would.
  void KillExpert(int i, int signal = SIGKILL);
  bool RestartExpert(int i, std::string* error, bool same_port = false);
  // Starts one more expert node ("expert-N", N = its index) while the cluster serves, with
  // `extra_flags` after the usual ones; returns its index, or -1 (`error` says why).
  int AddExpert(std::string* error, const std::vector<std::string>& extra_flags = {});
  // Sends `signal` to expert node i without waiting (SIGTERM drains it).
  void SignalExpert(int i, int signal);
  // Waits up to `seconds` for expert node i to exit and reaps it: its exit code, or -1 if it
  // is still running (or was killed by a signal: -100 - signal).
  int WaitExpertExit(int i, double seconds);
  int expert_count() const { return static_cast<int>(experts_.size()); }
  std::string ExpertLog(int i) const;

  // Attention node i: sends `signal` (SIGKILL dies at once, SIGTERM drains). WaitAttentionExit
  // waits up to `seconds` for it to exit and returns its exit code (128 + n if killed by signal
  // n), or -1 if it did not exit in time (it is then killed).
  void SignalAttention(int i, int signal);
  int WaitAttentionExit(int i, double seconds = 60);

  // The router: SIGKILL it and reap it (requests in flight at it are lost with their
  // connections), then start a new one with the same flags on the same HTTP and control ports,
  // as a restarted pod behind a stable address. RestartRouter returns once it listens (the nodes
  // register again on their own); false with `error` when it did not start.
  void KillRouter();
  bool RestartRouter(std::string* error);
  pid_t router_pid() const { return router_.pid; }

  // host:port of expert node i's / attention node i's /metrics ("" when it printed none).
  std::string ExpertMetricsAddress(int i) const;
  std::string AttentionMetricsAddress(int i) const;
  // GET http://`address``path` (any node's HTTP endpoint, e.g. /metrics).
  static HttpResult GetFrom(const std::string& address, const std::string& path,
                            double timeout_seconds = 10);

  // AttentionService.GetStatus of attention node i (all -1 on RPC failure).
  struct NodeStatus {
    int64_t capacity = -1, used = -1, running = -1, waiting = -1;
  };
  NodeStatus AttentionStatus(int i);
  int64_t CacheUsedTokens(int i) { return AttentionStatus(i).used; }

  // HTTP to the router. Non-streaming: whole body. Streaming: `on_data` gets each SSE `data:`
  // payload as it arrives (without the prefix); returning false closes the connection.
  HttpResult Get(const std::string& path, double timeout_seconds = 30);
  HttpResult Post(const std::string& path, const std::string& body, double timeout_seconds = 120);
  HttpResult PostStream(const std::string& path, const std::string& body,
                        const std::function<bool(const std::string& data)>& on_data,
                        double timeout_seconds = 120);

  // The last `lines` lines of every process's log, labelled.
  std::string LogTails(int lines = 40) const;

 private:
  struct Process {
    std::string name;
    std::vector<std::string> argv;
    std::string log_path;
    pid_t pid = -1;
    std::string address;  // host:port it printed
  };

  bool Spawn(Process& process, const std::string& marker, double timeout_seconds);
  // StopProcess with `signal` (SIGINT for expert nodes: SIGTERM would drain them) and a 10 s
  // grace; the process is marked stopped.
  std::string Stop(Process& process, int signal = SIGTERM);
  Process ExpertProcess(int index) const;

  ClusterOptions options_;
  std::string error_;
  std::vector<std::string> security_flags_;  // --tls-* or --insecure-plaintext, every process
  std::string log_dir_;
  int http_port_ = 0;
  std::string control_address_;
  Process router_;
  std::vector<Process> attention_;
  std::vector<Process> experts_;
};

// Stops child `pid` (of this process): `signal` (SIGTERM), up to `grace` for it to exit, then
// SIGKILL; reaps it. Returns "" when it exited with status 0, else a line saying what went wrong
// (it had already exited, ended by a signal or a non-zero status, or had to be killed).
std::string StopProcess(pid_t pid, const std::string& name, std::chrono::milliseconds grace,
                        int signal = SIGTERM);

// Greedy tokens against a golden prompt's continuation (the near-tie rule of ../shared/README.md):
// a differing token is accepted only where the reference's top-2 margin is below 1e-3, and later
// steps are not compared. Returns "" when they match, else a description of the mismatch.
std::string CompareGreedy(const json& golden_prompt, const std::vector<int64_t>& generated);

// The value of the first line of Prometheus text `text` that starts with `prefix` (a metric name,
// labels included, and a space for an exact match), or -1 when none does.
double MetricIn(const std::string& text, const std::string& prefix);

}  // namespace moemesh::integration
