// The command line Kubernetes would run for a container of a rendered manifest: its command and
// args with $(VAR) replaced from the container's ConfigMap (the `moemesh-serving-<hash>` data)
// and the given pod variables (POD_IP, POD_NAME), then named flags overridden (a test on one
// host gives each process its own ports where pods each have their own IP).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace moemesh::integration {

// `summary` is validate_manifests.mjs's output for a rendered overlay. Returns the argv of
// container `container` of workload `kind`/`name`, or an empty vector (with `error` set) when it
// is missing or a $(VAR) stays undefined. `overrides` maps a flag (e.g. "--port") to its new
// value; a flag the manifest lacks is appended.
std::vector<std::string> ManifestCommand(const nlohmann::json& summary, const std::string& kind,
                                         const std::string& name, const std::string& container,
                                         const std::map<std::string, std::string>& pod_variables,
                                         const std::map<std::string, std::string>& overrides,
                                         std::string* error);

}  // namespace moemesh::integration
