// Small float32 row operations used by the DeepSeek-V3 layers.
#pragma once

#include <cstdint>

namespace moemesh::kernels {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight  (DeepSeek-V3 RMSNorm).
// x and out are [rows, dim] with row stride `stride` (in place allowed); weight is [dim].
void RmsNorm(const float* x, int64_t rows, int64_t dim, int64_t stride, const float* weight,
             float eps, float* out);

// gate[i] = silu(gate[i]) * up[i] for i < count (SwiGLU; silu(v) = v / (1 + e^-v)).
void SiluMultiply(float* gate, const float* up, int64_t count);

// In-place softmax over values[0, count); entries equal to -inf get probability 0.
void Softmax(float* values, int64_t count);

// y[i] += alpha * x[i].
void Axpy(int64_t count, float alpha, const float* x, float* y);

}  // namespace moemesh::kernels
