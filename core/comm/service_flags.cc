#include "core/comm/service_flags.h"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>

#include <algorithm>
#include <string>

#include "absl/flags/parse.h"
#include "core/comm/tls.h"
#include "absl/flags/usage.h"

namespace moemesh::comm {

std::vector<char*> ParseServiceFlags(int argc, char** argv, const char* usage) {
  absl::SetProgramUsageMessage(usage);
  // The rewritten arguments must outlive parsing; flags keep no pointers into them after it.
  static std::vector<std::string> storage;
  storage.assign(argv, argv + argc);
  for (size_t i = 1; i < storage.size(); ++i) {
    std::string& argument = storage[i];
    if (argument == "--") break;
    if (argument.rfind("--", 0) != 0) continue;
    const size_t end = std::min(argument.find('='), argument.size());
    std::replace(argument.begin() + 2, argument.begin() + static_cast<long>(end), '-', '_');
  }
  std::vector<char*> arguments;
  for (std::string& argument : storage) arguments.push_back(argument.data());
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(arguments.size()), arguments.data());
  // Every service's gRPC security comes from the same flags (tls.h).
  if (absl::Status tls = ConfigureServiceTlsFromFlags(); !tls.ok()) {
    std::fprintf(stderr, "%s: %s\n", argc > 0 ? argv[0] : "moemesh", std::string(tls.message()).c_str());
    std::exit(2);
  }
  return positional;
}

}  // namespace moemesh::comm

namespace moemesh::comm {

sigset_t BlockServiceSignals(std::initializer_list<int> extra) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  for (int signal : extra) sigaddset(&signals, signal);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForSignal(const sigset_t& signals) {
  int signal = 0;
  while (sigwait(&signals, &signal) != 0) {
  }
  return signal;
}

}  // namespace moemesh::comm
