// The paged MLA latent KV cache (DeepSeek-V3 inference/model.py absorb path: kv_cache holds
// kv_norm(c_kv) [kv_lora_rank] and pe_cache the rotated k_pe [qk_rope_head_dim] per layer and
// position). Positions live in fixed-size blocks taken from a LatentBlockPool; a sequence's
// LatentCache keeps its block table and returns its blocks to the pool when destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace moemesh::model {

// A pool of cache blocks. Each block holds `block_size` positions of every layer. With
// `capacity_blocks` = 0 the pool grows on demand (single-process mode); otherwise it holds at
// most that many blocks and allocation beyond it fails. Thread-safe.
class LatentBlockPool {
 public:
  LatentBlockPool(int num_layers, int kv_lora_rank, int rope_dim, int block_size,
                  int64_t capacity_blocks);

  int num_layers() const { return num_layers_; }
  int kv_lora_rank() const { return kv_lora_rank_; }
  int rope_dim() const { return rope_dim_; }
  int block_size() const { return block_size_; }
  bool bounded() const { return capacity_blocks_ > 0; }
  int64_t capacity_blocks() const { return capacity_blocks_; }
  int64_t used_blocks() const;
  // Blocks that can still be taken (for a bounded pool).
  int64_t free_blocks() const;

  // Takes `count` blocks, all or none, appending their ids to `blocks` and, if given, their
  // storage to `storage` (which never moves while the block is held, so holders read it without
  // the pool's lock). ResourceExhausted when a bounded pool lacks them.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* blocks,
                        std::vector<float*>* storage = nullptr);
  void Release(const std::vector<int32_t>& blocks);

  // [block_size, kv_lora_rank] latents and [block_size, rope_dim] rope keys of (block, layer).
  float* latent(int32_t block, int layer) const;
  float* rope_key(int32_t block, int layer) const;
  // The same, from a block's storage pointer (no lock). Storage of one block:
  // [layer][block_size][kv_lora_rank] latents, then [layer][block_size][rope_dim] rope keys.
  float* latent_in(float* storage, int layer) const {
    return storage + static_cast<int64_t>(layer) * block_size_ * kv_lora_rank_;
  }
  float* rope_key_in(float* storage, int layer) const {
    return storage + static_cast<int64_t>(num_layers_) * block_size_ * kv_lora_rank_ +
           static_cast<int64_t>(layer) * block_size_ * rope_dim_;
  }

 private:
  int num_layers_;
  int kv_lora_rank_;
  int rope_dim_;
  int block_size_;
  int64_t capacity_blocks_;
  int64_t block_floats_;
  mutable absl::Mutex mutex_;
  std::vector<std::unique_ptr<float[]>> storage_ ABSL_GUARDED_BY(mutex_);
  std::vector<int32_t> free_list_ ABSL_GUARDED_BY(mutex_);
  int64_t used_ ABSL_GUARDED_BY(mutex_) = 0;
};

// One sequence's cache: a block table over a pool.
class LatentCache {
 public:
  explicit LatentCache(std::shared_ptr<LatentBlockPool> pool);
  ~LatentCache();
  LatentCache(LatentCache&& other) noexcept;
  LatentCache& operator=(LatentCache&& other) noexcept;
  LatentCache(const LatentCache&) = delete;
  LatentCache& operator=(const LatentCache&) = delete;

  // Positions already stored (identical across layers between steps).
  int64_t length() const { return length_; }
  int kv_lora_rank() const { return pool_->kv_lora_rank(); }
  int rope_dim() const { return pool_->rope_dim(); }
  int block_size() const { return pool_->block_size(); }

  // Makes room for `positions` positions in total (admission reserves prompt + budget up front,
  // so a running sequence never runs out). ResourceExhausted when the pool cannot.
  absl::Status Reserve(int64_t positions);
  int64_t reserved_positions() const {
    return static_cast<int64_t>(blocks_.size()) * pool_->block_size();
  }

  // Appends `count` positions to `layer`: latent [count, kv_lora_rank], rope_key
  // [count, rope_dim]. Grows the reservation if needed (fails only for a full bounded pool).
  absl::Status Append(int layer, const float* latent, const float* rope_key, int64_t count);
  // After every layer appended a step's positions: makes them part of length().
  void Commit(int64_t count) { length_ += count; }
  // Forgets positions at and after `length` (a step that failed half way).
  void Truncate(int64_t length);

  // Positions of `layer` written so far (length() plus this step's appends).
  int64_t positions(int layer) const { return written_[layer]; }
  // Block i of the table: its positions [i * block_size, ...) of `layer`.
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  const float* block_latent(int64_t i, int layer) const {
    return pool_->latent_in(storage_[i], layer);
  }
  const float* block_rope_key(int64_t i, int layer) const {
    return pool_->rope_key_in(storage_[i], layer);
  }
  // Returns every block to the pool; the cache is empty afterwards.
  void Clear();

 private:
  std::shared_ptr<LatentBlockPool> pool_;
  std::vector<int32_t> blocks_;
  std::vector<float*> storage_;  // blocks_[i]'s storage (stable while held)
  std::vector<int64_t> written_;  // per layer
  int64_t length_ = 0;
};

}  // namespace moemesh::model
