#include "tests/integration/cluster_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "core/comm/throwaway_ca.h"
#include "core/comm/tls.h"
#include "httplib.h"
#include "moemesh/v1/attention.grpc.pb.h"
#include <grpcpp/grpcpp.h>

extern char** environ;

namespace moemesh::integration {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Binary(const std::string& name) {
  return std::string(MOEMESH_BINARY_DIR) + "/bin/" + name;
}

std::string ReadFile(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  std::stringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

// The address after `marker` ("... listening on HOST:PORT") in `text`, or "".
std::string FindAddress(const std::string& text, const std::string& marker) {
  const size_t at = text.find(marker);
  if (at == std::string::npos) return "";
  const size_t start = at + marker.size();
  const size_t end = text.find('\n', start);
  if (end == std::string::npos) return "";  // line not complete yet
  return text.substr(start, end - start);
}

int PortOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? 0 : std::atoi(address.c_str() + colon + 1);
}

// The environment of the children: ours plus one compute thread each.
std::vector<std::string> ChildEnvironment() {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    if (text.rfind("OPENBLAS_NUM_THREADS=", 0) == 0 || text.rfind("OMP_NUM_THREADS=", 0) == 0) {
      continue;
    }
    env.push_back(text);
  }
  env.push_back("OPENBLAS_NUM_THREADS=1");
  env.push_back("OMP_NUM_THREADS=1");
  return env;
}

// "exit status N" or "signal N (name)" of a waitpid status.
std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

// Waits for `pid` to exit, polling up to `timeout`; true with its status when it did.
bool WaitExit(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const pid_t done = ::waitpid(pid, status, WNOHANG);
    if (done == pid) return true;
    if (done < 0) return false;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string FixtureDir() { return std::string(MOEMESH_SHARED_DIR) + "/fixtures/tiny-r1"; }
std::string GoldensPath() { return std::string(MOEMESH_SHARED_DIR) + "/goldens/tiny-r1.json"; }

const json& TinyR1Goldens() {
  static const json* goldens = new json(json::parse(ReadFile(GoldensPath())));
  return *goldens;
}

json HttpResult::Json() const {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? json() : parsed;
}

std::string CompareGreedy(const json& prompt, const std::vector<int64_t>& generated) {
  const auto golden = prompt["greedy"].get<std::vector<int64_t>>();
  if (generated.size() != golden.size()) {
    std::ostringstream out;
    out << prompt["name"].get<std::string>() << ": " << generated.size() << " tokens, expected "
        << golden.size();
    return out.str();
  }
  for (size_t step = 0; step < golden.size(); ++step) {
    if (generated[step] == golden[step]) continue;
    const json& top = step == 0 ? prompt["prefill_top"] : prompt["decode_top"][step - 1];
    const double margin = top[0][1].get<double>() - top[1][1].get<double>();
    if (margin < 1e-3) return "";  // a near-tie: either token is right, later steps not compared
    std::ostringstream out;
    out << prompt["name"].get<std::string>() << " step " << step << ": got " << generated[step]
        << ", reference " << golden[step] << " (margin " << margin << ")";
    return out.str();
  }
  return "";
}

const std::string& TestCertificateDir(std::string* error) {
  static std::once_flag once;
  static std::string* dir = new std::string();
  static std::string* failure = new std::string();
  std::call_once(once, [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/moemesh-it-ca-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      *failure = "mkdtemp for the test CA failed";
      return;
    }
    if (absl::Status status = comm::GenerateThrowawayCertificates(templ); !status.ok()) {
      *failure = std::string(status.message());
      std::error_code ignored;
      fs::remove_all(templ, ignored);
      return;
    }
    *dir = templ;
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(*dir, ignored);
    });
  });
  if (error != nullptr) *error = *failure;
  return *dir;
}

absl::StatusOr<std::vector<std::string>> ServiceSecurityFlags(bool tls) {
  if (!tls) {
    comm::ResetServiceTls();
    return std::vector<std::string>{"--insecure-plaintext"};
  }
  std::string error;
  const std::string& dir = TestCertificateDir(&error);
  if (dir.empty()) return absl::InternalError("test CA: " + error);
  comm::TlsOptions options;
  options.ca_file = dir + "/ca.pem";
  options.cert_file = dir + "/node.pem";
  options.key_file = dir + "/node.key";
  if (absl::Status status = comm::ConfigureServiceTls(options); !status.ok()) return status;
  return std::vector<std::string>{"--tls-ca", options.ca_file, "--tls-cert", options.cert_file,
                                  "--tls-key", options.key_file};
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  char pattern[] = "/tmp/moemesh-it-XXXXXX";
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = tmp != nullptr && *tmp ? std::string(tmp) + "/moemesh-it-XXXXXX" : pattern;
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    error_ = "mkdtemp failed";
    return;
  }
  log_dir_ = buffer.data();
  const std::string model = options_.model_dir.empty() ? FixtureDir() : options_.model_dir;
  absl::StatusOr<std::vector<std::string>> security = ServiceSecurityFlags(options_.tls);
  if (!security.ok()) {
    error_ = std::string(security.status().message());
    return;
  }
  security_flags_ = *std::move(security);

  router_.name = "router";
  router_.argv = {Binary("moemesh-router"), "--model", model, "--host", "127.0.0.1", "--port", "0",
                  "--control-port", "0", "--attention-nodes",
                  std::to_string(options_.attention_nodes), "--expert-nodes",
                  std::to_string(options_.expert_nodes)};
  router_.argv.insert(router_.argv.end(), options_.router_flags.begin(),
                      options_.router_flags.end());
  router_.argv.insert(router_.argv.end(), security_flags_.begin(), security_flags_.end());
  if (!Spawn(router_, "moemesh-router http listening on ", 60)) return;
  control_address_ =
      FindAddress(ReadFile(router_.log_path), "moemesh-router control listening on ");
  http_port_ = PortOf(router_.address);
  if (control_address_.empty() || http_port_ <= 0) {
    error_ = "router did not print its ports";
    return;
  }

  for (int i = 0; i < options_.expert_nodes; ++i) experts_.push_back(ExpertProcess(i));
  for (int i = 0; i < options_.attention_nodes; ++i) {
    Process process;
    process.name = "attention-" + std::to_string(i);
    process.argv = {Binary("moemesh-attention-node"), "--model", model, "--router",
                    control_address_, "--host", "127.0.0.1", "--port", "0", "--node-name",
                    process.name, "--cache-tokens", std::to_string(options_.cache_tokens),
                    "--cache-block-size", std::to_string(options_.cache_block_size),
                    "--micro-batches", std::to_string(options_.micro_batches)};
    process.argv.insert(process.argv.end(), options_.attention_flags.begin(),
                        options_.attention_flags.end());
    process.argv.insert(process.argv.end(), security_flags_.begin(), security_flags_.end());
    attention_.push_back(std::move(process));
  }
  for (Process& process : experts_) {
    if (!Spawn(process, "moemesh-expert-node listening on ", 60)) return;
  }
  for (Process& process : attention_) {
    if (!Spawn(process, "moemesh-attention-node listening on ", 60)) return;
  }
  std::string last;
  if (!WaitReady(options_.ready_timeout_seconds, &last)) {
    error_ = "cluster not ready after " + std::to_string(options_.ready_timeout_seconds) +
             " s: " + last + "\n" + LogTails();
  }
}

Cluster::~Cluster() {
  if (::testing::Test::HasFailure() || !ok()) {
    std::fprintf(stderr, "---- cluster logs (%s) ----\n%s", log_dir_.c_str(), LogTails().c_str());
  }
  std::string problems;
  for (Process& process : attention_) problems += Stop(process);
  for (Process& process : experts_) problems += Stop(process, SIGINT);
  problems += Stop(router_);
  if (!problems.empty()) {
    ADD_FAILURE() << "cluster processes did not shut down cleanly:\n" << problems << LogTails();
  }
  if (!log_dir_.empty() && !::testing::Test::HasFailure() && ok()) {
    std::error_code ignored;
    fs::remove_all(log_dir_, ignored);
  }
}

bool Cluster::Spawn(Process& process, const std::string& marker, double timeout_seconds) {
  process.log_path = log_dir_ + "/" + process.name + ".log";
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv;
  for (std::string& argument : process.argv) argv.push_back(argument.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = ChildEnvironment();
  std::vector<char*> envp;
  for (std::string& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  // Truncate: a restarted node's log starts afresh, so the marker found is the new one.
  const std::string previous = ReadFile(process.log_path);
  if (!previous.empty()) {
    std::ofstream(process.log_path + ".previous", std::ios::app) << previous;
  }
  const int log = ::open(process.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (log < 0) {
    error_ = "cannot open " + process.log_path;
    return false;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    error_ = "fork failed";
    return false;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the test died before prctl
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::close(log);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log);
  process.pid = pid;
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(timeout_seconds * 1000));
  while (Clock::now() < deadline) {
    process.address = FindAddress(ReadFile(process.log_path), marker);
    if (!process.address.empty()) return true;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      process.pid = -1;
      error_ = process.name + " exited (status " + std::to_string(status) +
               ") before listening:\n" + ReadFile(process.log_path);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = process.name + " did not print '" + marker + "' within " +
           std::to_string(timeout_seconds) + " s";
  return false;
}

Cluster::Process Cluster::ExpertProcess(int index) const {
  Process process;
  process.name = "expert-" + std::to_string(index);
  process.argv = {Binary("moemesh-expert-node"), "--model",
                  options_.model_dir.empty() ? FixtureDir() : options_.model_dir, "--router",
                  control_address_, "--host", "127.0.0.1", "--port", "0", "--node-name",
                  process.name};
  process.argv.insert(process.argv.end(), options_.expert_flags.begin(),
                      options_.expert_flags.end());
  process.argv.insert(process.argv.end(), security_flags_.begin(), security_flags_.end());
  return process;
}

int Cluster::AddExpert(std::string* error, const std::vector<std::string>& extra_flags) {
  Process process = ExpertProcess(static_cast<int>(experts_.size()));
  process.argv.insert(process.argv.end(), extra_flags.begin(), extra_flags.end());
  experts_.push_back(std::move(process));
  error_.clear();
  if (!Spawn(experts_.back(), "moemesh-expert-node listening on ", 60)) {
    if (error != nullptr) *error = error_;
    error_.clear();
    return -1;
  }
  return static_cast<int>(experts_.size()) - 1;
}

void Cluster::SignalExpert(int i, int signal) {
  const Process& process = experts_.at(i);
  if (process.pid > 0) ::kill(process.pid, signal);
}

int Cluster::WaitExpertExit(int i, double seconds) {
  Process& process = experts_.at(i);
  if (process.pid <= 0) return -1;
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  while (true) {
    int status = 0;
    if (::waitpid(process.pid, &status, WNOHANG) == process.pid) {
      process.pid = -1;
      if (WIFSIGNALED(status)) return -100 - WTERMSIG(status);
      return WEXITSTATUS(status);
    }
    if (Clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string Cluster::ExpertLog(int i) const { return ReadFile(experts_.at(i).log_path); }

std::string StopProcess(pid_t pid, const std::string& name, std::chrono::milliseconds grace,
                        int signal) {
  if (pid <= 0) return "";
  int status = 0;
  // Still running? A process that already exited died on its own: that is a failure too.
  if (::waitpid(pid, &status, WNOHANG) == pid) {
    return name + " had exited before it was stopped (" + DescribeExit(status) + ")\n";
  }
  ::kill(pid, signal);
  const std::string sent = signal == SIGTERM ? "SIGTERM" : ::strsignal(signal);
  if (!WaitExit(pid, grace, &status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return name + " did not exit within " + std::to_string(grace.count()) + " ms of " + sent +
           " (killed)\n";
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  return name + " ended badly after " + sent + " (" + DescribeExit(status) + ")\n";
}

std::string Cluster::Stop(Process& process, int signal) {
  const pid_t pid = process.pid;
  process.pid = -1;
  return StopProcess(pid, process.name, std::chrono::seconds(10), signal);
}

bool Cluster::WaitReady(double seconds, std::string* last) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  while (true) {
    HttpResult result = Get("/ready", 5);
    if (result.status == 200) return true;
    if (last != nullptr) *last = result.status == 0 ? result.error : result.body;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Cluster::KillExpert(int i, int signal) {
  Process& process = experts_.at(i);
  if (process.pid <= 0) return;
  ::kill(process.pid, signal);
  int status = 0;
  ::waitpid(process.pid, &status, 0);
  process.pid = -1;
}

void Cluster::SignalAttention(int i, int signal) {
  const Process& process = attention_.at(i);
  if (process.pid > 0) ::kill(process.pid, signal);
}

int Cluster::WaitAttentionExit(int i, double seconds) {
  Process& process = attention_.at(i);
  if (process.pid <= 0) return -1;
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  int status = 0;
  while (::waitpid(process.pid, &status, WNOHANG) != process.pid) {
    if (Clock::now() > deadline) {
      ::kill(process.pid, SIGKILL);
      ::waitpid(process.pid, &status, 0);
      process.pid = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  process.pid = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

bool Cluster::RestartExpert(int i, std::string* error, bool same_port) {
  Process& process = experts_.at(i);
  if (std::string problem = Stop(process, SIGINT); !problem.empty()) {
    ADD_FAILURE() << "restarting " << problem;
  }
  for (size_t a = 0; a + 1 < process.argv.size(); ++a) {
    if (process.argv[a] == "--port") {
      process.argv[a + 1] = same_port ? std::to_string(PortOf(process.address)) : "0";
    }
  }
  error_.clear();
  bool started = Spawn(process, "moemesh-expert-node listening on ", 60);
  // Listening is not registered: until the router hears from the new process it may still
  // count the dead one as healthy (heartbeat timeout), so /ready can say 200 for a moment
  // before the restart is seen. Wait until the new process has loaded its experts.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (started && ReadFile(process.log_path).find(": placement version ") == std::string::npos) {
    if (Clock::now() > deadline) {
      error_ = process.name + " restarted but loaded no placement within 60 s";
      started = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!started && error != nullptr) *error = error_;
  error_.clear();
  return started;
}

void Cluster::KillRouter() {
  if (router_.pid <= 0) return;
  ::kill(router_.pid, SIGKILL);
  int status = 0;
  ::waitpid(router_.pid, &status, 0);
  router_.pid = -1;
}

bool Cluster::RestartRouter(std::string* error) {
  if (std::string problem = Stop(router_); !problem.empty()) {
    ADD_FAILURE() << "restarting " << problem;
  }
  const std::string control_port = std::to_string(PortOf(control_address_));
  for (size_t a = 0; a + 1 < router_.argv.size(); ++a) {
    if (router_.argv[a] == "--port") router_.argv[a + 1] = std::to_string(http_port_);
    if (router_.argv[a] == "--control-port") router_.argv[a + 1] = control_port;
  }
  error_.clear();
  const bool started = Spawn(router_, "moemesh-router http listening on ", 60);
  if (!started && error != nullptr) *error = error_;
  error_.clear();
  return started;
}

std::string Cluster::ExpertMetricsAddress(int i) const {
  return FindAddress(ReadFile(experts_.at(i).log_path), "moemesh-expert-node metrics on ");
}

std::string Cluster::AttentionMetricsAddress(int i) const {
  return FindAddress(ReadFile(attention_.at(i).log_path), "moemesh-attention-node metrics on ");
}

Cluster::NodeStatus Cluster::AttentionStatus(int i) {
  auto channel = comm::CreateServiceChannel(attention_.at(i).address);
  auto stub = moemesh::v1::AttentionService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  moemesh::v1::NodeStatusRequest request;
  moemesh::v1::NodeStatus reply;
  NodeStatus status;
  if (!stub->GetStatus(&context, request, &reply).ok()) return status;
  status.capacity = static_cast<int64_t>(reply.cache_capacity_tokens());
  status.used = static_cast<int64_t>(reply.cache_used_tokens());
  status.running = reply.running_sequences();
  status.waiting = reply.waiting_sequences();
  return status;
}

namespace {

httplib::Client MakeClient(int port, double timeout_seconds) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  const auto seconds = static_cast<time_t>(timeout_seconds);
  client.set_read_timeout(seconds, static_cast<time_t>((timeout_seconds - seconds) * 1e6));
  client.set_write_timeout(10, 0);
  return client;
}

HttpResult FromResult(const httplib::Result& result) {
  HttpResult out;
  if (result) {
    out.status = result->status;
    out.body = result->body;
  } else {
    out.error = httplib::to_string(result.error());
  }
  return out;
}

}  // namespace

HttpResult Cluster::Get(const std::string& path, double timeout_seconds) {
  httplib::Client client = MakeClient(http_port_, timeout_seconds);
  return FromResult(client.Get(path.c_str()));
}

HttpResult Cluster::GetFrom(const std::string& address, const std::string& path,
                           double timeout_seconds) {
  httplib::Client client = MakeClient(PortOf(address), timeout_seconds);
  return FromResult(client.Get(path.c_str()));
}

HttpResult Cluster::Post(const std::string& path, const std::string& body,
                         double timeout_seconds) {
  httplib::Client client = MakeClient(http_port_, timeout_seconds);
  return FromResult(client.Post(path.c_str(), body, "application/json"));
}

HttpResult Cluster::PostStream(const std::string& path, const std::string& body,
                               const std::function<bool(const std::string&)>& on_data,
                               double timeout_seconds) {
  httplib::Client client = MakeClient(http_port_, timeout_seconds);
  httplib::Request request;
  request.method = "POST";
  request.path = path;
  request.body = body;
  request.set_header("Content-Type", "application/json");
  std::string raw;      // everything received
  std::string pending;  // bytes not yet split into events
  request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    raw.append(data, length);
    pending.append(data, length);
    // SSE events end with a blank line; each of ours is one `data: ...` line.
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) {
        if (!on_data(event.substr(6))) return false;
      } else if (event.rfind("data:", 0) == 0) {
        if (!on_data(event.substr(5))) return false;
      }
    }
    return true;
  };
  HttpResult out = FromResult(client.send(request));
  if (out.status == 0 && out.body.empty()) out.body = raw;
  if (out.status != 0 && out.body.empty()) out.body = raw;
  return out;
}

std::string Cluster::LogTails(int lines) const {
  std::string out;
  auto tail = [&](const Process& process) {
    if (process.log_path.empty()) return;
    std::vector<std::string> all;
    std::ifstream stream(process.log_path);
    for (std::string line; std::getline(stream, line);) all.push_back(line);
    out += "== " + process.name + " (" + process.log_path + ")\n";
    for (size_t i = all.size() > size_t(lines) ? all.size() - lines : 0; i < all.size(); ++i) {
      out += "   " + all[i] + "\n";
    }
  };
  tail(router_);
  for (const Process& process : experts_) tail(process);
  for (const Process& process : attention_) tail(process);
  return out;
}

double MetricIn(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) return std::atof(line.substr(line.rfind(' ') + 1).c_str());
  }
  return -1;
}

}  // namespace moemesh::integration
