// The attention core of DeepSeek-V3's MLA in its absorbed form (inference/model.py MLA with
// attn_impl "absorb"): queries are moved into the latent space by kv_b_proj's key half, the
// latent cache is both K (with the shared rope key) and V, and the result leaves the latent
// space by kv_b_proj's value half.
//
// MlaAttentionTiled walks the cache in tiles with an online softmax (FlashAttention, Dao et al.
// 2022; Milakov & Gimelshein 2018): scratch memory is O(heads x (kv_rank + tile)) per query row,
// independent of the context length. Tiles are the cache's blocks, i.e. fixed ranges of
// ABSOLUTE positions [b * block_size, (b + 1) * block_size), visited in ascending order. The rows
// of one call share each tile's transpose and the absorbed kv_b products, but every product is
// one of core/kernels/cpu/gemm.h's batch-invariant kernels (an element's operations never depend
// on the other rows in the call) and each row's softmax runs over its own visible width: a row's
// result is bit-for-bit the same whichever other rows share the step and however the prompt was
// chunked.
//
// MlaAttentionNaive is the untiled reference (the whole score row, two-pass softmax; memory
// rows x heads x positions) that tests compare the tiled form against.
#pragma once

#include <cstdint>

#include "core/model/latent_cache.h"

namespace moemesh::model {

// The shapes of one MLA layer (config qk_nope_head_dim, qk_rope_head_dim, v_head_dim,
// kv_lora_rank, num_attention_heads) and the softmax scale (1/sqrt(nope + rope) times the YaRN
// mscale^2 multiplier).
struct MlaDims {
  int64_t heads = 0;
  int64_t nope = 0;
  int64_t rope = 0;
  int64_t value_dim = 0;
  int64_t kv_rank = 0;
  float softmax_scale = 1.0f;
  int64_t qk_head() const { return nope + rope; }
};

// Attention of `rows` consecutive query rows of one sequence; row i is at absolute position
// start + i and attends to cache positions [0, start + i] of `layer` (already appended).
//   query  [rows, heads, nope + rope], the rope half already rotated
//   kv_b   kv_b_proj [heads * (nope + value_dim), kv_rank] (per head: nope key rows, then
//          value_dim value rows)
//   out    [rows, heads, value_dim]
void MlaAttentionTiled(const MlaDims& dims, const LatentCache& cache, int layer, const float* kv_b,
                       const float* query, int64_t rows, int64_t start, float* out);

// Same contract, untiled (the reference for tests; memory grows with rows x positions).
void MlaAttentionNaive(const MlaDims& dims, const LatentCache& cache, int layer, const float* kv_b,
                       const float* query, int64_t rows, int64_t start, float* out);

// out[i] = e^x[i] for i < count, float32 within ~2 ulp (Cephes expf: x = n ln2 + r, degree-6
// polynomial for e^r); arguments below -87.3 give ~1e-38, not 0. The same bits for a value
// wherever it sits in the array (the tail goes through the same vector code).
void ExpInPlace(float* x, int64_t count);

}  // namespace moemesh::model
