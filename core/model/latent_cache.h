// The MLA latent KV cache of one sequence: per layer and position, kv_norm(c_kv)
// [kv_lora_rank] and the rotated k_pe [qk_rope_head_dim] (DeepSeek-V3 inference/model.py,
// absorb path: kv_cache and pe_cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moemesh::model {

class LatentCache {
 public:
  LatentCache(int num_layers, int kv_lora_rank, int rope_dim)
      : kv_lora_rank_(kv_lora_rank), rope_dim_(rope_dim), latents_(num_layers), rope_keys_(num_layers) {}

  // Positions already stored (identical across layers between steps).
  int64_t length() const { return length_; }
  int kv_lora_rank() const { return kv_lora_rank_; }
  int rope_dim() const { return rope_dim_; }

  // Appends `count` positions to `layer`: latent [count, kv_lora_rank], rope_key [count, rope_dim].
  void Append(int layer, const float* latent, const float* rope_key, int64_t count);
  // After every layer appended a step's positions: makes them part of length().
  void Commit(int64_t count) { length_ += count; }
  // Drops positions at and after `length` (used when a step is abandoned).
  void Truncate(int64_t length);

  // [positions, kv_lora_rank] and [positions, rope_dim] of `layer`, positions =
  // length() + whatever this step already appended.
  const float* latent(int layer) const { return latents_[layer].data(); }
  const float* rope_key(int layer) const { return rope_keys_[layer].data(); }
  int64_t positions(int layer) const {
    return static_cast<int64_t>(latents_[layer].size()) / kv_lora_rank_;
  }
  // Bytes held for all layers.
  int64_t Bytes() const;

 private:
  int kv_lora_rank_;
  int rope_dim_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> latents_;
  std::vector<std::vector<float>> rope_keys_;
};

}  // namespace moemesh::model
