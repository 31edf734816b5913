// The threads the CPU kernels share: a process-wide pool of ComputeThreads() - 1 workers that
// join the calling thread on the items of one parallel loop.
//
// Unlike an OpenMP parallel region, whose end is a barrier every thread of the team must reach,
// a loop here ends when its items are done: items are claimed one at a time from a counter, and
// a worker that is not running when the loop starts (descheduled on a machine that other services
// share) simply finds nothing left to claim. The caller never waits for a thread that has not
// started an item, so a decode step of ~80 small products does not pay one scheduling delay each.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace moemesh::kernels {

// Runs item(i) for every i in [0, count), on the calling thread and up to `threads` - 1 pool
// workers, and returns when all have finished. Which thread runs an item is not fixed (items must
// not depend on it). Calls with `threads` <= 1 or one item, and calls made while another loop
// uses the pool (from another thread, or from inside an item), run every item on the calling
// thread, in order.
void ParallelFor(int64_t count, int threads, absl::FunctionRef<void(int64_t)> item);

}  // namespace moemesh::kernels
