// The cluster harness's own checks: stopping a process reports every way it can end badly, so a
// service that crashes or hangs on SIGTERM fails the test that started it.
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

// Forks `bash -c script` and returns its pid once the script has printed its first line (so
// its trap is in place): a blocking read that ends with that line or with the script's exit.
pid_t StartScript(const std::string& script) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl("/bin/bash", "bash", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  char byte = 0;
  while (::read(fds[0], &byte, 1) == 1 && byte != '\n') {
  }
  ::close(fds[0]);
  return pid;
}

// Sets `trap`, says so, then loops in short sleeps so the trap runs promptly.
std::string Looping(const std::string& trap) {
  return trap + "; echo ready; while :; do sleep 0.05; done";
}

TEST(HarnessStop, CleanExitOnSigtermPasses) {
  const pid_t pid = StartScript(Looping("trap 'exit 0' TERM"));
  ASSERT_GT(pid, 0);
  EXPECT_EQ(StopProcess(pid, "clean", std::chrono::seconds(20)), "");
}

TEST(HarnessStop, CrashOnSigtermIsReported) {
  const pid_t pid = StartScript(Looping("trap 'kill -SEGV $$' TERM"));
  ASSERT_GT(pid, 0);
  const std::string problem = StopProcess(pid, "crasher", std::chrono::seconds(20));
  EXPECT_NE(problem.find("crasher ended badly after SIGTERM (signal 11"), std::string::npos)
      << problem;
}

TEST(HarnessStop, NonZeroExitIsReported) {
  const pid_t pid = StartScript(Looping("trap 'exit 3' TERM"));
  ASSERT_GT(pid, 0);
  const std::string problem = StopProcess(pid, "failing", std::chrono::seconds(20));
  EXPECT_NE(problem.find("exit status 3"), std::string::npos) << problem;
}

TEST(HarnessStop, ProcessThatDiedEarlierIsReported) {
  const pid_t pid = StartScript("exit 0");
  ASSERT_GT(pid, 0);
  // It exits on its own; wait until it is a zombie (bounded by the loop count).
  for (int i = 0; i < 2000 && ::kill(pid, 0) == 0; ++i) {
    std::string stat;
    if (FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r")) {
      char buffer[256] = {0};
      std::fgets(buffer, sizeof(buffer), f);
      std::fclose(f);
      stat = buffer;
    }
    if (stat.find(") Z") != std::string::npos) break;
    ::usleep(5 * 1000);
  }
  const std::string problem = StopProcess(pid, "early", std::chrono::seconds(20));
  EXPECT_NE(problem.find("early had exited before it was stopped"), std::string::npos) << problem;
}

TEST(HarnessStop, ProcessIgnoringSigtermIsKilledAndReported) {
  const pid_t pid = StartScript(Looping("trap '' TERM"));
  ASSERT_GT(pid, 0);
  const std::string problem = StopProcess(pid, "stubborn", std::chrono::milliseconds(500));
  EXPECT_NE(problem.find("stubborn did not exit"), std::string::npos) << problem;
}

}  // namespace
}  // namespace moemesh::integration
