// The attention node's view of the expert placement: which expert nodes hold each logical
// expert, their addresses and health. Updated from the control plane; read by every dispatch.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "moemesh/v1/control.pb.h"

namespace moemesh::attention_node {

// An immutable placement snapshot.
struct PlacementSnapshot {
  uint64_t version = 0;
  std::map<std::pair<int, int>, std::vector<std::string>> replicas;  // (layer, expert) -> nodes
  std::map<std::string, std::string> addresses;                      // node id -> host:port
  std::set<std::string> unhealthy;  // per the router, or suspected here after a failed dispatch

  // The replica that serves (layer, expert): the first healthy one in placement order, so the
  // same placement always gives the same choice. nullptr when none is healthy.
  const std::string* ChooseReplica(int layer, int expert) const;
};

class PlacementTable {
 public:
  // Replaces the placement (a newer version clears local suspicions).
  void Update(const moemesh::v1::Placement& placement);
  // Marks a node as failed until the next placement version says otherwise.
  void Suspect(const std::string& node_id);
  std::shared_ptr<const PlacementSnapshot> Snapshot() const;

 private:
  mutable absl::Mutex mutex_;
  std::shared_ptr<const PlacementSnapshot> snapshot_ ABSL_GUARDED_BY(mutex_) =
      std::make_shared<PlacementSnapshot>();
};

}  // namespace moemesh::attention_node
