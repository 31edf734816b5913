// Helpers for tests that run external tools (prometheus, promtool, chromium).
#pragma once

#include <string>
#include <sys/types.h>

namespace moemesh::integration {

// Full path of `name` on PATH (or in /usr/bin, /usr/lib/chromium), "" when absent.
std::string FindTool(const std::string& name);
// Runs `command` through /bin/sh; returns its exit status and puts stdout (and stderr, when
// `with_stderr`) in `output`.
int RunCommand(const std::string& command, std::string* output, bool with_stderr = true);
// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();
// A fresh temp directory (mkdtemp under $TMPDIR or /tmp).
std::string TempDir(const std::string& prefix);
// Forks and execs argv with stdout/stderr to `log_path`; the child dies with the test
// (PR_SET_PDEATHSIG). Returns the pid, or -1.
pid_t SpawnProcess(const std::string& argv0, const std::string& args_joined_by_nul,
                   const std::string& log_path);
// SIGTERM, wait up to 5 s, then SIGKILL; reaps.
void StopProcess(pid_t pid);

}  // namespace moemesh::integration
