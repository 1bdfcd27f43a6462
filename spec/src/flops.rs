//! FLOPs per token, forward and training, with the attention term.
//!
//! Matmul FLOPs are 2 per active matmul parameter (embedding lookups and norms excluded); the
//! attention term is `2·H·(d_qk + d_v)` per key attended, averaged over the positions of a
//! causal sequence of `seq_len` tokens (limited by the window on SWA layers). Training is the
//! forward pass plus a backward of twice its cost.

use serde::Serialize;

use crate::params::{count, mtp_module_params};
use crate::types::{LayerAttention, Spec};

/// FLOPs of one token at a given training sequence length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flops {
    pub seq_len: u64,
    /// Forward matmul FLOPs of the main model (2 × active matmul parameters).
    pub forward_matmul: u64,
    /// Forward attention FLOPs (scores and weighted values) of the main model.
    pub forward_attention: u64,
    /// Main-model forward total.
    pub forward: u64,
    /// Main-model forward + backward (3 × forward).
    pub training: u64,
    /// Forward FLOPs of the MTP modules (their layers, projections and the shared head).
    pub mtp_forward: u64,
    /// Training FLOPs including the MTP modules.
    pub training_with_mtp: u64,
}

/// Mean number of keys a query attends to, over the positions `1..=seq_len` of a causal
/// sequence, with an optional window `(window, sink_tokens)`.
pub fn mean_keys(seq_len: u64, window: Option<(u64, u64)>) -> f64 {
    if seq_len == 0 {
        return 0.0;
    }
    // Σ_{i=1..n} min(i, w)
    let tri = |n: u64, w: u64| -> f64 {
        let (n, w) = (n as f64, w as f64);
        if n <= w {
            n * (n + 1.0) / 2.0
        } else {
            w * (w + 1.0) / 2.0 + (n - w) * w
        }
    };
    let sum = match window {
        None => tri(seq_len, seq_len),
        Some((w, sinks)) => tri(seq_len, w) + if seq_len > w { tri(seq_len - w, sinks) } else { 0.0 },
    };
    sum / seq_len as f64
}

/// Attention FLOPs of one token in one layer of the given kind.
pub fn attention_flops(s: &Spec, kind: LayerAttention, seq_len: u64) -> u64 {
    let m = &s.attention.mla;
    let window = match (kind, &s.attention.swa) {
        (LayerAttention::Swa, Some(w)) => Some((w.window, w.sink_tokens)),
        _ => None,
    };
    (2.0 * (m.n_heads * (m.qk_head_dim() + m.v_head_dim)) as f64 * mean_keys(seq_len, window)).round() as u64
}

/// FLOPs per token at `seq_len`.
pub fn flops(s: &Spec, seq_len: u64) -> Flops {
    let p = count(s);
    // Matmul parameters: everything active except the embedding lookup and the norms.
    let norms =
        p.components.iter().filter(|c| c.name == "layernorms" || c.name == "norm").map(|c| c.active).sum::<u64>()
            + latent_norms(s) * s.n_layers;
    let forward_matmul = 2 * (p.active - p.embedding - norms);
    let forward_attention: u64 = (0..s.n_layers).map(|l| attention_flops(s, s.layer_attention(l), seq_len)).sum();
    let forward = forward_matmul + forward_attention;
    let (own, layer) = mtp_module_params(s);
    let mtp_norms = 3 * crate::params::norm_params(&s.norm, s.d_model) + layer.norms + latent_norms(s);
    let head = s.vocab_size * s.d_model;
    let mtp_forward = s.mtp_depth()
        * (2 * (own + layer.active() - mtp_norms + head) + attention_flops(s, LayerAttention::Mla, seq_len));
    Flops {
        seq_len,
        forward_matmul,
        forward_attention,
        forward,
        training: 3 * forward,
        mtp_forward,
        training_with_mtp: 3 * (forward + mtp_forward),
    }
}

/// Parameters of the latent norms inside one attention block (q and kv).
fn latent_norms(s: &Spec) -> u64 {
    let m = &s.attention.mla;
    let q = if m.q_lora_rank > 0 { crate::params::norm_params(&s.norm, m.q_lora_rank) } else { 0 };
    q + crate::params::norm_params(&s.norm, m.kv_lora_rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_keys_matches_a_direct_sum() {
        for (n, w) in [(1u64, None), (7, None), (10, Some((3, 0))), (10, Some((3, 2))), (5, Some((8, 1)))] {
            let direct: u64 = (1..=n)
                .map(|i| match w {
                    None => i,
                    Some((w, k)) => i.min(w) + if i > w { k.min(i - w) } else { 0 },
                })
                .sum();
            assert!((mean_keys(n, w) - direct as f64 / n as f64).abs() < 1e-12, "n={n} w={w:?}");
        }
    }

    #[test]
    fn forward_is_matmul_plus_attention() {
        let s = crate::canonical::get("tiny").unwrap();
        let f = flops(&s, 64);
        assert_eq!(f.forward, f.forward_matmul + f.forward_attention);
        assert_eq!(f.training, 3 * f.forward);
    }
}
