// Command-line parsing shared by the service binaries (moemesh-router, moemesh-attention-node,
// moemesh-expert-node): absl flags, accepting the documented dashed spellings.
#pragma once

#include <vector>

namespace moemesh::comm {

// absl flag names use '_'; this accepts "--node-name" as well as "--node_name" (and
// "--node-name=value"), then runs absl::ParseCommandLine. Returns the positional arguments.
std::vector<char*> ParseServiceFlags(int argc, char** argv, const char* usage);

}  // namespace moemesh::comm
