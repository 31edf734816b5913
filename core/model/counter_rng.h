// Counter-based random numbers for sampling: the draw for a token is a pure function of
// (seed, position), so a sequence that is replayed (another attention node after a failure,
// a recompute after preemption) or scheduled in any batch draws exactly the same numbers.
//
// The generator is Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy
// as 1, 2, 3", SC 2011; the Random123 library's reference, also used by cuRAND, PyTorch and
// JAX): a 10-round Feistel-like bijection of a 128-bit counter under a 64-bit key. We use
//   key     = the sequence's seed (low 32 bits, high 32 bits),
//   counter = (position low 32 bits, position high 32 bits, stream, 0),
// where position is the absolute index of the token being drawn in the sequence (prompt tokens
// count: the first generated token of a 5-token prompt is drawn at position 5) and stream
// separates independent uses at one position (0 = the sampling draw).
#pragma once

#include <array>
#include <cstdint>

namespace moemesh::model {

// Philox4x32-10 of `counter` under `key` (Random123's philox4x32_R(10, ...)): four 32-bit words,
// uniformly distributed and independent across counters.
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// A uniform double in [0, 1) with 53 random bits, for (seed, position, stream); the same value on
// every machine and standard library.
double CounterUniform(uint64_t seed, uint64_t position, uint32_t stream = 0);

}  // namespace moemesh::model
