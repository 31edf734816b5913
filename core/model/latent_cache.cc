#include "core/model/latent_cache.h"

namespace moemesh::model {

void LatentCache::Append(int layer, const float* latent, const float* rope_key, int64_t count) {
  latents_[layer].insert(latents_[layer].end(), latent, latent + count * kv_lora_rank_);
  rope_keys_[layer].insert(rope_keys_[layer].end(), rope_key, rope_key + count * rope_dim_);
}

void LatentCache::Truncate(int64_t length) {
  for (size_t layer = 0; layer < latents_.size(); ++layer) {
    if (positions(static_cast<int>(layer)) > length) {
      latents_[layer].resize(static_cast<size_t>(length * kv_lora_rank_));
      rope_keys_[layer].resize(static_cast<size_t>(length * rope_dim_));
    }
  }
  if (length_ > length) length_ = length;
}

int64_t LatentCache::Bytes() const {
  int64_t bytes = 0;
  for (size_t layer = 0; layer < latents_.size(); ++layer) {
    bytes += static_cast<int64_t>(latents_[layer].capacity() + rope_keys_[layer].capacity()) * 4;
  }
  return bytes;
}

}  // namespace moemesh::model
