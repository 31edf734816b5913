// The threaded entry points of the GEMM kernels (internal to core/kernels/cpu): split the outputs
// of a task over ComputeThreads() threads (each output is computed by exactly one thread, so the
// split never changes a result) and run the active SIMD path's kernel on each share.
#pragma once

#include "core/kernels/cpu/gemm_isa.h"

namespace moemesh::kernels::internal {

void RunNtThreaded(const NtTask& task);
void RunNnThreaded(const NnTask& task);

}  // namespace moemesh::kernels::internal
