// Rotary position embedding for the qk_rope_head_dim part of queries and keys, with YaRN
// frequency scaling (DeepSeek-V3 inference/model.py precompute_freqs_cis / apply_rotary_emb).
#pragma once

#include <cstdint>
#include <vector>

#include "core/checkpoint/model_config.h"

namespace moemesh::model {

class RotaryEmbedding {
 public:
  // rope_dim = qk_rope_head_dim. With `rope_scaling` (YaRN), frequencies below the correction
  // range are divided by `factor` and those inside it are blended linearly, as model.py does.
  explicit RotaryEmbedding(const checkpoint::ModelConfig& config);

  int rope_dim() const { return rope_dim_; }
  // Rotates `heads` vectors of rope_dim floats (stride `head_stride` between heads) in place for
  // position `position`. Interleaved pairs: (v[2i], v[2i+1]) is one complex number, multiplied by
  // e^{i * position * freq_i}.
  void Apply(float* vectors, int heads, int64_t head_stride, int64_t position) const;

  // The multiplier of the attention softmax scale: mscale^2 with
  // mscale = 0.1 * mscale_all_dim * ln(factor) + 1 under YaRN (factor > 1), else 1.
  double SoftmaxScaleMultiplier() const { return softmax_scale_multiplier_; }

  const std::vector<float>& frequencies() const { return frequencies_; }

 private:
  int rope_dim_;
  std::vector<float> frequencies_;  // [rope_dim / 2], float32 as model.py computes them
  double softmax_scale_multiplier_ = 1.0;
};

}  // namespace moemesh::model
