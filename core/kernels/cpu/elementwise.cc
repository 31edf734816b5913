#include "core/kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moemesh::kernels {

void RmsNorm(const float* x, int64_t rows, int64_t dim, int64_t stride, const float* weight,
             float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in_row = x + r * stride;
    float* out_row = out + r * stride;
    float sum_squares = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_squares += in_row[i] * in_row[i];
    const float inverse_rms = 1.0f / std::sqrt(sum_squares / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out_row[i] = in_row[i] * inverse_rms * weight[i];
  }
}

void SiluMultiply(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float v = gate[i];
    gate[i] = v / (1.0f + std::exp(-v)) * up[i];
  }
}

void Softmax(float* values, int64_t count) {
  float maximum = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < count; ++i) maximum = std::max(maximum, values[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = std::exp(values[i] - maximum);
    sum += values[i];
  }
  const float inverse = 1.0f / sum;
  for (int64_t i = 0; i < count; ++i) values[i] *= inverse;
}

void Axpy(int64_t count, float alpha, const float* x, float* y) {
  for (int64_t i = 0; i < count; ++i) y[i] += alpha * x[i];
}

}  // namespace moemesh::kernels
