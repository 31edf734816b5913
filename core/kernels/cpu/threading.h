// How many threads the CPU kernels (OpenBLAS and our OpenMP loops) use.
#pragma once

namespace moemesh::kernels {

// Sets the thread count of OpenBLAS and of the OpenMP loops in these kernels. Services call it
// once at start-up from a flag: several processes sharing a few cores must not each spin up
// threads per core (busy-waiting BLAS threads then slow everything down many times over).
// `threads` <= 0 leaves the library defaults (one per core).
void SetComputeThreads(int threads);

// The thread count the kernels' OpenMP loops use, on every thread of the process (the value set
// by SetComputeThreads, else OpenMP's default).
int ComputeThreads();

}  // namespace moemesh::kernels
