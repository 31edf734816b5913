// A node's side of the control plane: register with the router, heartbeat, follow the placement.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "moemesh/v1/control.pb.h"

namespace moemesh::comm {

struct ControlClientOptions {
  std::string router_address;  // host:port of the router's control-plane gRPC server
  moemesh::v1::RegisterRequest registration;
  // Optional: fills the dynamic part of every registration (called on the client's thread, on a
  // copy of `registration`): what the node holds from a router it was registered with before
  // (RegisterRequest.placement_version, held_experts), so that a restarted router adopts it.
  std::function<void(moemesh::v1::RegisterRequest&)> registration_state;
  // Used until the router's RegisterReply names its own interval (which then wins).
  double heartbeat_interval_seconds = 0.5;
  double rpc_timeout_seconds = 2.0;       // deadline of each Register/Heartbeat/GetPlacement
  double register_retry_seconds = 0.2;    // wait between failed registrations
  // Optional: sees every answered heartbeat's reply (from the client's thread, after the
  // committed placement it names was fetched and delivered). Expert nodes follow the target
  // placement, the oldest version in use and their drain state through it.
  std::function<void(const moemesh::v1::HeartbeatReply&)> on_heartbeat_reply;
};

// Counters for the metrics issue.
struct ControlClientCounters {
  uint64_t registrations = 0;
  uint64_t heartbeats_ok = 0;
  uint64_t heartbeats_failed = 0;
  uint64_t placements_fetched = 0;
};

// Registers (retrying until the router answers), then heartbeats on its own thread. Start does
// not block: registration happens on that thread, and node_id() is set before the first
// on_placement call. Re-registers
// when the router says it does not know the node (it restarted). Calls `on_placement` (from its
// thread) with every newer placement version it sees; a placement older than the one held (or a
// restarted router's version 0, before it has one) never replaces it. `heartbeat_state` is called before every heartbeat to
// fill the node's state (loaded placement version, cache usage...).
class ControlClient {
 public:
  using PlacementCallback = std::function<void(const moemesh::v1::Placement&)>;
  using HeartbeatStateCallback = std::function<void(moemesh::v1::HeartbeatRequest&)>;

  static std::unique_ptr<ControlClient> Start(ControlClientOptions options,
                                              PlacementCallback on_placement,
                                              HeartbeatStateCallback heartbeat_state);
  virtual ~ControlClient() = default;
  // The id the router gave this node ("" until registered).
  virtual std::string node_id() const = 0;
  // Latest placement seen (version 0 before the first).
  virtual moemesh::v1::Placement placement() const = 0;
  // Fetches the placement now (used after a dispatch failure to learn about replacements); a new
  // version is also handed to `on_placement` from the client's thread. Errors: the RPC's status.
  virtual absl::StatusOr<moemesh::v1::Placement> RefreshPlacement() = 0;
  // GetPlacement with target = true: the placement being prepared (the committed one when none
  // is). Not delivered to on_placement. Errors: the RPC's status.
  virtual absl::StatusOr<moemesh::v1::Placement> FetchTargetPlacement() = 0;
  // Sends a heartbeat now instead of at the next interval (e.g. after loading experts).
  virtual void HeartbeatSoon() = 0;
  // Sends a heartbeat now whose state is filled after this call (so it carries whatever the
  // caller changed before calling, e.g. "draining") and waits until the router has answered it.
  // Returns false when `timeout` passed first, the client stops, or the router does not answer
  // (the client keeps heartbeating as usual either way).
  virtual bool SendHeartbeatAndWait(absl::Duration timeout) = 0;
  virtual ControlClientCounters counters() const = 0;
  // Stops heartbeating (joins the thread). Idempotent; the destructor calls it.
  virtual void Stop() = 0;
};

}  // namespace moemesh::comm
