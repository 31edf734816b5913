#include "core/model/latent_cache.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace moemesh::model {

LatentBlockPool::LatentBlockPool(int num_layers, int kv_lora_rank, int rope_dim, int block_size,
                                 int64_t capacity_blocks)
    : num_layers_(num_layers),
      kv_lora_rank_(kv_lora_rank),
      rope_dim_(rope_dim),
      block_size_(block_size),
      capacity_blocks_(capacity_blocks),
      block_floats_(static_cast<int64_t>(num_layers) * block_size * (kv_lora_rank + rope_dim)) {}

int64_t LatentBlockPool::used_blocks() const {
  absl::MutexLock lock(&mutex_);
  return used_;
}

int64_t LatentBlockPool::free_blocks() const {
  absl::MutexLock lock(&mutex_);
  return capacity_blocks_ > 0 ? capacity_blocks_ - used_ : INT64_MAX;
}

absl::Status LatentBlockPool::Allocate(int64_t count, std::vector<int32_t>* blocks,
                                       std::vector<float*>* storage) {
  absl::MutexLock lock(&mutex_);
  if (capacity_blocks_ > 0 && used_ + count > capacity_blocks_) {
    return absl::ResourceExhaustedError(absl::StrCat("latent cache full: need ", count,
                                                     " blocks, ", capacity_blocks_ - used_,
                                                     " of ", capacity_blocks_, " free"));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (free_list_.empty()) {
      // Growing an unbounded pool can fail: give back what this call took, then report it.
      std::unique_ptr<float[]> block(new (std::nothrow) float[static_cast<size_t>(block_floats_)]);
      if (block == nullptr) {
        for (int64_t j = 0; j < i; ++j) {
          free_list_.push_back(blocks->back());
          blocks->pop_back();
          if (storage != nullptr) storage->pop_back();
        }
        return absl::ResourceExhaustedError(absl::StrCat(
            "out of memory: cannot allocate a latent cache block of ", block_floats_ * 4,
            " bytes"));
      }
      storage_.push_back(std::move(block));
      free_list_.push_back(static_cast<int32_t>(storage_.size() - 1));
    }
    blocks->push_back(free_list_.back());
    if (storage != nullptr) storage->push_back(storage_[free_list_.back()].get());
    free_list_.pop_back();
  }
  used_ += count;
  return absl::OkStatus();
}

void LatentBlockPool::Release(const std::vector<int32_t>& blocks) {
  absl::MutexLock lock(&mutex_);
  for (int32_t block : blocks) free_list_.push_back(block);
  used_ -= static_cast<int64_t>(blocks.size());
}

float* LatentBlockPool::latent(int32_t block, int layer) const {
  absl::MutexLock lock(&mutex_);
  return latent_in(storage_[block].get(), layer);
}

float* LatentBlockPool::rope_key(int32_t block, int layer) const {
  absl::MutexLock lock(&mutex_);
  return rope_key_in(storage_[block].get(), layer);
}

LatentCache::LatentCache(std::shared_ptr<LatentBlockPool> pool)
    : pool_(std::move(pool)), written_(pool_->num_layers(), 0) {}

LatentCache::~LatentCache() { Clear(); }

LatentCache::LatentCache(LatentCache&& other) noexcept
    : pool_(other.pool_),
      blocks_(std::move(other.blocks_)),
      storage_(std::move(other.storage_)),
      written_(std::move(other.written_)),
      length_(other.length_) {
  other.blocks_.clear();
  other.storage_.clear();
  other.written_.assign(pool_->num_layers(), 0);
  other.length_ = 0;
}

LatentCache& LatentCache::operator=(LatentCache&& other) noexcept {
  if (this != &other) {
    Clear();
    pool_ = other.pool_;
    blocks_ = std::move(other.blocks_);
    storage_ = std::move(other.storage_);
    written_ = std::move(other.written_);
    length_ = other.length_;
    other.blocks_.clear();
    other.storage_.clear();
    other.written_.assign(pool_->num_layers(), 0);
    other.length_ = 0;
  }
  return *this;
}

void LatentCache::Clear() {
  if (pool_ != nullptr && !blocks_.empty()) pool_->Release(blocks_);
  blocks_.clear();
  storage_.clear();
  std::fill(written_.begin(), written_.end(), 0);
  length_ = 0;
}

absl::Status LatentCache::Reserve(int64_t positions) {
  const int64_t block_size = pool_->block_size();
  const int64_t needed = (positions + block_size - 1) / block_size - num_blocks();
  if (needed <= 0) return absl::OkStatus();
  return pool_->Allocate(needed, &blocks_, &storage_);
}

absl::Status LatentCache::Append(int layer, const float* latent, const float* rope_key,
                                 int64_t count) {
  if (absl::Status status = Reserve(written_[layer] + count); !status.ok()) return status;
  const int64_t block_size = pool_->block_size();
  const int rank = pool_->kv_lora_rank();
  const int rope = pool_->rope_dim();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t position = written_[layer] + i;
    float* storage = storage_[position / block_size];
    const int64_t slot = position % block_size;
    std::memcpy(pool_->latent_in(storage, layer) + slot * rank, latent + i * rank,
                sizeof(float) * rank);
    std::memcpy(pool_->rope_key_in(storage, layer) + slot * rope, rope_key + i * rope,
                sizeof(float) * rope);
  }
  written_[layer] += count;
  return absl::OkStatus();
}

void LatentCache::Truncate(int64_t length) {
  for (int64_t& written : written_) written = std::min(written, length);
  length_ = std::min(length_, length);
}

}  // namespace moemesh::model
