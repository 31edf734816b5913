#include "core/model/rope.h"

#include <algorithm>
#include <cmath>

namespace moemesh::model {
namespace {

// model.py find_correction_dim: the dimension whose wavelength completes `rotations` turns over
// `max_positions` positions.
double CorrectionDim(double rotations, int dim, double base, double max_positions) {
  return dim * std::log(max_positions / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const checkpoint::ModelConfig& config)
    : rope_dim_(config.qk_rope_head_dim) {
  const int half = rope_dim_ / 2;
  const float base = static_cast<float>(config.rope_theta);
  frequencies_.resize(half);
  for (int i = 0; i < half; ++i) {
    // 1 / base^(2i / dim), computed in float32 like torch.arange(0, dim, 2) / dim.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rope_dim_);
    frequencies_[i] = 1.0f / std::pow(base, exponent);
  }
  if (config.rope_scaling.has_value() && config.rope_scaling->factor > 1.0) {
    const checkpoint::YarnRopeScaling& yarn = *config.rope_scaling;
    const double original = yarn.original_max_position_embeddings;
    double low = std::floor(CorrectionDim(yarn.beta_fast, rope_dim_, config.rope_theta, original));
    double high = std::ceil(CorrectionDim(yarn.beta_slow, rope_dim_, config.rope_theta, original));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(rope_dim_ - 1));
    if (low == high) high += 0.001;
    const float factor = static_cast<float>(yarn.factor);
    for (int i = 0; i < half; ++i) {
      const float ramp = std::clamp(static_cast<float>((i - low) / (high - low)), 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      frequencies_[i] = frequencies_[i] / factor * (1.0f - smooth) + frequencies_[i] * smooth;
    }
    const double mscale = 0.1 * yarn.mscale_all_dim * std::log(yarn.factor) + 1.0;
    softmax_scale_multiplier_ = mscale * mscale;
  }
}

void RotaryEmbedding::Apply(float* vectors, int heads, int64_t head_stride,
                            int64_t position) const {
  const int half = rope_dim_ / 2;
  for (int i = 0; i < half; ++i) {
    // torch.outer(t, freqs) in float32, then polar(1, angle).
    const float angle = static_cast<float>(position) * frequencies_[i];
    const float cosine = static_cast<float>(std::cos(static_cast<double>(angle)));
    const float sine = static_cast<float>(std::sin(static_cast<double>(angle)));
    for (int h = 0; h < heads; ++h) {
      float* pair = vectors + h * head_stride + 2 * i;
      const float real = pair[0];
      const float imaginary = pair[1];
      pair[0] = real * cosine - imaginary * sine;
      pair[1] = real * sine + imaginary * cosine;
    }
  }
}

}  // namespace moemesh::model
