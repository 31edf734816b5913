// `moemesh up` keeps the cluster serving when an expert node leaves: SIGTERM on one of its two
// expert nodes drains it (exit 0), up says so and keeps running, and requests still get the
// golden tokens; Ctrl-C (SIGINT) then stops everything and up exits 0. The processes talk mTLS
// with the throwaway CA up generates (the default).
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream stream(path);
  std::stringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

// Waits up to `seconds` until `pattern` matches the file; the match, or empty.
std::smatch WaitFor(const std::string& path, const std::regex& pattern, double seconds,
                    std::string* text) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  std::smatch match;
  while (std::chrono::steady_clock::now() < deadline) {
    *text = ReadAll(path);
    if (std::regex_search(*text, match, pattern)) return match;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::smatch();
}

TEST(MoemeshUp, ExpertNodeDrainedWithSigtermLeavesTheClusterServing) {
  char dir_template[] = "/tmp/moemesh-up-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string output = dir + "/up.out";
  const std::string binary = std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh";
  const std::string model = FixtureDir();
  const std::string log_dir = dir + "/logs";
  const pid_t parent = ::getpid();
  const pid_t up = ::fork();
  ASSERT_GE(up, 0);
  if (up == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    std::freopen(output.c_str(), "w", stdout);
    std::freopen(output.c_str(), "a", stderr);
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    ::execl(binary.c_str(), binary.c_str(), "up", "--model", model.c_str(), "--attention-nodes",
            "1", "--expert-nodes", "2", "--port", "0", "--cache-tokens", "8192", "--log-dir",
            log_dir.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string text;
  std::smatch ready = WaitFor(output, std::regex("cluster ready: http://127\\.0\\.0\\.1:(\\d+)/v1"),
                              120, &text);
  ASSERT_FALSE(ready.empty()) << text;
  const int port = std::stoi(ready[1]);
  std::smatch expert = WaitFor(output, std::regex("started expert-1 \\(pid (\\d+)\\)"), 1, &text);
  ASSERT_FALSE(expert.empty()) << text;
  const pid_t expert_pid = std::stoi(expert[1]);

  // mTLS by default: up made a throwaway CA and every process serves with it.
  EXPECT_TRUE(std::ifstream(log_dir + "/tls/ca.pem").good()) << "no throwaway CA in " << log_dir;
  for (const char* name : {"attention-0", "expert-0", "expert-1"}) {
    EXPECT_NE(ReadAll(log_dir + "/" + name + ".log").find(" tls=mtls"), std::string::npos)
        << name << ": " << ReadAll(log_dir + "/" + name + ".log");
  }

  // The expert nodes share the cores with the attention node that wakes them: every thread of
  // theirs runs under SCHED_BATCH (no wake-up preemption of the attention node).
  const std::string tasks = "/proc/" + std::to_string(expert_pid) + "/task";
  int threads = 0;
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    const pid_t tid = std::stoi(task.path().filename().string());
    const int policy = ::sched_getscheduler(tid);
    if (policy < 0) continue;  // (a thread that just ended)
    ++threads;
    EXPECT_EQ(policy, SCHED_BATCH) << "expert-1 thread " << tid;
  }
  EXPECT_GT(threads, 1);
  ::kill(expert_pid, SIGTERM);
  std::smatch drained = WaitFor(
      output, std::regex("expert-1 exited with status 0 \\(drained[^\\n]*keeps serving with 1 "
                         "attention and 1 expert nodes"),
      60, &text);
  EXPECT_FALSE(drained.empty()) << text << ReadAll(log_dir + "/router.log");
  EXPECT_EQ(::kill(up, 0), 0) << "moemesh up stopped: " << text;

  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  for (const json& prompt : TinyR1Goldens()["results"]) {
    const json body = {{"model", "tiny-r1"},  {"prompt", prompt["ids"]},
                       {"max_tokens", 24},    {"temperature", 0},
                       {"return_token_ids", true}};
    auto result = client.Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    ASSERT_EQ(result->status, 200) << result->body;
    const json answer = json::parse(result->body);
    EXPECT_EQ(CompareGreedy(prompt, answer["choices"][0]["token_ids"].get<std::vector<int64_t>>()),
              "");
  }
  // The attention node reached the expert nodes through shared memory, not the stream.
  EXPECT_EQ(ReadAll(log_dir + "/attention-0.log").find("dispatching over the gRPC stream"),
            std::string::npos)
      << ReadAll(log_dir + "/attention-0.log");
  ::kill(up, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(up, &status, 0), up);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << ReadAll(output);
  if (!::testing::Test::HasFailure()) std::system(("rm -rf '" + dir + "'").c_str());
}

}  // namespace
}  // namespace moemesh::integration
