//! Inference KV-cache size: MLA's compressed latent beside an MHA model of the same shape.
//!
//! MLA caches, per layer and token, the normalized latent (`kv_lora_rank`) and the shared roped
//! key (`qk_rope_head_dim`). In FP8 the latent is E4M3 with one f32 scale per 128 values and the
//! rope part stays bf16 (FlashMLA's layout: 656 bytes at DeepSeek-V3's sizes). An MHA model of the
//! same shape caches `n_heads · (qk_head_dim + v_head_dim)` bf16 values. SWA layers keep at most
//! `window + sink_tokens` tokens.

use serde::Serialize;

use crate::types::{KvCacheDtype, Spec};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvCache {
    /// Bytes per token per MLA layer.
    pub mla_bytes_per_token_layer: u64,
    /// Bytes per token per layer of an MHA model with the same heads and head dims (bf16).
    pub mha_bytes_per_token_layer: u64,
    /// Bytes per token over all full-attention (MLA) layers.
    pub bytes_per_token: u64,
    /// The same for the MHA model of the same shape (every layer full attention).
    pub mha_bytes_per_token: u64,
    /// Context length the per-sequence figures are given at.
    pub context: u64,
    /// Bytes of one sequence's cache at `context` tokens (SWA layers capped at their window).
    pub bytes_per_sequence: u64,
    pub mha_bytes_per_sequence: u64,
}

pub fn kv_cache(s: &Spec, context: u64) -> KvCache {
    let m = &s.attention.mla;
    let per = match s.precision.kv_cache {
        KvCacheDtype::F32 => 4 * (m.kv_lora_rank + m.qk_rope_head_dim),
        KvCacheDtype::Bf16 => 2 * (m.kv_lora_rank + m.qk_rope_head_dim),
        KvCacheDtype::Fp8 => m.kv_lora_rank + 4 * m.kv_lora_rank.div_ceil(128) + 2 * m.qk_rope_head_dim,
    };
    let mha = 2 * m.n_heads * (m.qk_head_dim() + m.v_head_dim);
    let (mla_layers, swa_layers) = s.attention_layer_counts();
    let swa_tokens = s.attention.swa.as_ref().map_or(0, |w| (w.window + w.sink_tokens).min(context));
    KvCache {
        mla_bytes_per_token_layer: per,
        mha_bytes_per_token_layer: mha,
        bytes_per_token: per * mla_layers,
        mha_bytes_per_token: mha * s.n_layers,
        context,
        bytes_per_sequence: per * (mla_layers * context + swa_layers * swa_tokens),
        mha_bytes_per_sequence: mha * s.n_layers * context,
    }
}
