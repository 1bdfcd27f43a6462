//! Parameter counts, per component and in total, active per token, and for MTP.
//!
//! Conventions (checked against the HF DeepseekV3 model, see `shared/reference/deepseek-v3.md` §7):
//! trainable parameters only — the router's `e_score_correction_bias` is a buffer, counted apart;
//! `active` is what one token touches in the main model, embedding row and LM head included, MTP
//! excluded; `mtp` counts the MTP modules' own parameters (embedding and head are shared).

use serde::Serialize;

use crate::types::{Norm, Spec};

/// Parameters of one component, per layer where it repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// HF-style name of the component (`self_attn.q`, `mlp.experts`, ...).
    pub name: &'static str,
    /// Layers (or modules) it appears in; 1 for global tensors.
    pub count: u64,
    /// Parameters in one instance.
    pub per_instance: u64,
    /// Parameters over all instances.
    pub total: u64,
    /// Parameters one token touches over all instances.
    pub active: u64,
}

/// Every parameter count `inspect` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamCounts {
    /// All trainable parameters of the main model (MTP excluded).
    pub total: u64,
    /// Parameters one token touches in the main model, embedding and head included.
    pub active: u64,
    /// `active` without the input embedding (a lookup, not a matmul).
    pub active_non_embedding: u64,
    /// Parameters of the MTP modules (embedding and head shared with the main model).
    pub mtp: u64,
    /// Non-trainable state: the routers' correction biases (`e_score_correction_bias`).
    pub buffers: u64,
    /// Parameters of the routed experts (what expert parallelism shards).
    pub routed_experts: u64,
    /// The embedding and (untied) head.
    pub embedding: u64,
    pub lm_head: u64,
    pub components: Vec<Component>,
}

/// Parameters of one norm over `n` features.
pub fn norm_params(norm: &Norm, n: u64) -> u64 {
    match norm {
        Norm::Rmsnorm { .. } => n,
        // weight, bias, and the scalar alpha
        Norm::Dyt { .. } => 2 * n + 1,
    }
}

/// The pieces of one decoder layer, shared by the main stack and MTP modules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerParams {
    pub q: u64,
    pub kv: u64,
    pub o: u64,
    pub norms: u64,
    pub dense_ffn: u64,
    pub routed_experts: u64,
    pub routed_active: u64,
    pub shared_experts: u64,
    pub gate: u64,
    pub gate_bias: u64,
}

impl LayerParams {
    pub fn attention(&self) -> u64 {
        self.q + self.kv + self.o
    }
    pub fn total(&self) -> u64 {
        self.attention() + self.norms + self.dense_ffn + self.routed_experts + self.shared_experts + self.gate
    }
    pub fn active(&self) -> u64 {
        self.attention() + self.norms + self.dense_ffn + self.routed_active + self.shared_experts + self.gate
    }
}

/// One decoder layer's parameters; `moe` selects the MoE FFN over the dense one.
pub fn layer_params(s: &Spec, moe: bool) -> LayerParams {
    let d = s.d_model;
    let m = &s.attention.mla;
    let h = m.n_heads;
    let q = if m.q_lora_rank > 0 {
        d * m.q_lora_rank + norm_params(&s.norm, m.q_lora_rank) + m.q_lora_rank * h * m.qk_head_dim()
    } else {
        d * h * m.qk_head_dim()
    };
    let kv = d * (m.kv_lora_rank + m.qk_rope_head_dim)
        + norm_params(&s.norm, m.kv_lora_rank)
        + m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim);
    let o = h * m.v_head_dim * d;
    let norms = 2 * norm_params(&s.norm, d);
    let mut p = LayerParams {
        q,
        kv,
        o,
        norms,
        dense_ffn: 0,
        routed_experts: 0,
        routed_active: 0,
        shared_experts: 0,
        gate: 0,
        gate_bias: 0,
    };
    match (&s.moe, moe) {
        (Some(e), true) => {
            let expert = 3 * d * e.moe_intermediate_size;
            p.routed_experts = e.n_routed_experts * expert;
            p.routed_active = e.top_k * expert;
            p.shared_experts = e.n_shared_experts * expert;
            p.gate = e.n_routed_experts * d;
            p.gate_bias = e.n_routed_experts;
        }
        _ => {
            let i = s.dense.as_ref().map_or(0, |x| x.intermediate_size);
            p.dense_ffn = 3 * d * i;
        }
    }
    p
}

/// One MTP module: two input norms, the 2d -> d projection, a decoder layer, the head's norm.
pub fn mtp_module_params(s: &Spec) -> (u64, LayerParams) {
    let d = s.d_model;
    let layer = layer_params(s, s.moe.is_some());
    let own = 3 * norm_params(&s.norm, d) + 2 * d * d;
    (own, layer)
}

/// Counts every parameter of `s`.
pub fn count(s: &Spec) -> ParamCounts {
    let d = s.d_model;
    let dense = layer_params(s, false);
    let moe = layer_params(s, true);
    let (nd, nm) = (s.n_dense_layers(), s.n_moe_layers());
    let embedding = s.vocab_size * d;
    let lm_head = if s.tie_embeddings { 0 } else { s.vocab_size * d };
    let final_norm = norm_params(&s.norm, d);

    let mut comps = Vec::new();
    let mut add = |name: &'static str, count: u64, per: u64, active_per: u64| {
        if count > 0 && per > 0 {
            comps.push(Component { name, count, per_instance: per, total: count * per, active: count * active_per });
        }
    };
    let layers = s.n_layers;
    add("embed_tokens", 1, embedding, embedding);
    add("self_attn.q", layers, moe.q, moe.q);
    add("self_attn.kv", layers, moe.kv, moe.kv);
    add("self_attn.o_proj", layers, moe.o, moe.o);
    add("layernorms", layers, moe.norms, moe.norms);
    add("mlp (dense)", nd, dense.dense_ffn, dense.dense_ffn);
    add("mlp.experts", nm, moe.routed_experts, moe.routed_active);
    add("mlp.shared_experts", nm, moe.shared_experts, moe.shared_experts);
    add("mlp.gate", nm, moe.gate, moe.gate);
    add("norm", 1, final_norm, final_norm);
    add("lm_head", 1, lm_head, lm_head);

    let total = embedding + lm_head + final_norm + nd * dense.total() + nm * moe.total();
    // A token reads one embedding row, but the convention (HF, DeepSeek) counts the whole matrix.
    let active = embedding + lm_head + final_norm + nd * dense.active() + nm * moe.active();
    let (mtp_own, mtp_layer) = mtp_module_params(s);
    let mtp = s.mtp_depth() * (mtp_own + mtp_layer.total());
    ParamCounts {
        total,
        active,
        active_non_embedding: active - embedding,
        mtp,
        buffers: nm * moe.gate_bias + s.mtp_depth() * mtp_layer.gate_bias,
        routed_experts: nm * moe.routed_experts,
        embedding,
        lm_head,
        components: comps,
    }
}
