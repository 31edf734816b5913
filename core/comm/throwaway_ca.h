// A throwaway certificate authority for local clusters and tests (`moemesh up`, the integration
// harness): the files core/comm/tls.h's mTLS reads, generated with the openssl command-line tool.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace moemesh::comm {

// A throwaway CA and one certificate signed by it (server and client use; subjectAltName
// DNS:localhost, IP:127.0.0.1 plus `hosts`), written to `dir` as ca.pem, ca.key, node.pem,
// node.key, with the openssl command-line tool. For local clusters and tests; Internal with
// openssl's output when it fails.
absl::Status GenerateThrowawayCertificates(const std::string& dir,
                                           const std::vector<std::string>& hosts = {});

}  // namespace moemesh::comm
