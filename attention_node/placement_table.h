// The attention node's view of the expert placement: which expert nodes hold each logical
// expert, their addresses and health. Updated from the control plane; read by every dispatch.
// Forward passes pin the version they use (one version per pass: attention nodes switch at a
// step boundary), and the node reports the oldest pinned version to the router so that expert
// nodes free an expert only once no dispatch can still be sent to it.
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
  std::set<std::string> suspected;  // the part of `unhealthy` suspected here only

  // The replica that computes every row of (layer, expert) in one dispatch: among the healthy
  // replicas (placement order, skipping `unhealthy` and `also_unhealthy`), number
  // (spread + expert) mod count. `spread` is the caller's dispatch counter, so consecutive
  // dispatches rotate over the replicas (an expert's rows spread evenly over its replicas over
  // time) and the same dispatch sequence always makes the same choice. All rows of one expert
  // in one dispatch go to one replica: the expert FFN then sees exactly the rows it would see
  // with one replica, so its kernels round the same way (they are not batch-invariant across
  // row counts). nullptr when no replica is healthy.
  const std::string* ChooseReplica(int layer, int expert, uint64_t spread = 0,
                                   const std::set<std::string>* also_unhealthy = nullptr) const;
};

class PlacementTable {
 public:
  // Replaces the placement (a newer version clears local suspicions). Target placements
  // (Placement.target) are ignored: attention nodes only use committed ones.
  void Update(const moemesh::v1::Placement& placement);
  // Marks a node as failed until the next placement version says otherwise.
  void Suspect(const std::string& node_id);
  // Drops this node's own suspicions (the router still calls those nodes healthy): a step that
  // waited long for its experts tries them again. Returns whether there were any.
  bool Forgive();
  std::shared_ptr<const PlacementSnapshot> Snapshot() const;

  // The current snapshot, registered as in use until Unpin(its version).
  std::shared_ptr<const PlacementSnapshot> Pin();
  void Unpin(uint64_t version);
  // The oldest pinned version, else the current version (0 before the first placement).
  uint64_t UsedVersion() const;

 private:
  mutable absl::Mutex mutex_;
  std::shared_ptr<const PlacementSnapshot> snapshot_ ABSL_GUARDED_BY(mutex_) =
      std::make_shared<PlacementSnapshot>();
  std::multiset<uint64_t> pinned_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace moemesh::attention_node
