// The deadline of a dispatch to one expert node, adapted to its round trips: `ceiling` until
// kWarmupReplies replies were seen (the first ones include connecting and warm-up), then
// kFactor times the slowest recent round trip (a maximum decaying by 1 % per reply) within
// [floor, ceiling]. A floor at or above the ceiling keeps the ceiling. Not thread-safe.
#pragma once

#include <algorithm>

#include "absl/time/time.h"

namespace moemesh::comm {

class RoundTripDeadline {
 public:
  RoundTripDeadline(absl::Duration floor, absl::Duration ceiling)
      : floor_(floor), ceiling_(ceiling) {}

  absl::Duration Next() const {
    if (replies_ < kWarmupReplies || floor_ >= ceiling_) return ceiling_;
    return std::clamp(slowest_recent_ * kFactor, floor_, ceiling_);
  }
  void Observe(absl::Duration round_trip) {
    slowest_recent_ = std::max(round_trip, slowest_recent_ * 0.99);
    ++replies_;
  }

  static constexpr int kWarmupReplies = 8;
  static constexpr double kFactor = 10.0;

 private:
  absl::Duration floor_;
  absl::Duration ceiling_;
  absl::Duration slowest_recent_;
  int replies_ = 0;
};

}  // namespace moemesh::comm
