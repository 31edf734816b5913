// Start-up pieces shared by the service binaries (moemesh-router, moemesh-attention-node,
// moemesh-expert-node): absl flags accepting the documented dashed spellings, and the signals
// that stop a service.
#pragma once

#include <signal.h>

#include <initializer_list>
#include <vector>

namespace moemesh::comm {

// absl flag names use '_'; this accepts "--node-name" as well as "--node_name" (and
// "--node-name=value"), then runs absl::ParseCommandLine and configures the process's gRPC
// security from --tls-* / --insecure-plaintext (tls.h; exits with status 2 and a message when
// neither is given or a file is unreadable). Returns the positional arguments.
std::vector<char*> ParseServiceFlags(int argc, char** argv, const char* usage);

// Blocks SIGINT and SIGTERM (and `extra` signals) in this thread and in every thread it starts
// afterwards, so that only WaitForSignal takes them. Call before starting any thread.
sigset_t BlockServiceSignals(std::initializer_list<int> extra = {});

// Waits for one of the blocked `signals` and returns its number.
int WaitForSignal(const sigset_t& signals);

}  // namespace moemesh::comm
