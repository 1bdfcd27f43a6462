//! Memory per GPU for a parallel layout: weights, gradients, optimizer states, activations.
//!
//! The model (stated so a reader can check it):
//! - World = `tp·pp·dp`. Routed experts are sharded over `ep` ranks taken inside `dp·tp`
//!   (DeepSeek-V3 runs EP across its data-parallel ranks); everything else over `tp` and `pp`.
//!   Pipeline stages hold `n_layers/pp` layers; the first stage also holds the embedding, the last
//!   the final norm, head and MTP modules; the larger of the two is reported.
//! - Weights in `precision.param`, except that under the FP8 recipe the projection matrices the
//!   FP8 GEMMs read (attention, dense and expert FFNs) are held as E4M3 copies with one f32
//!   scale per `weight_block`² block instead; an fp32 master copy when `precision.master` differs; fp32
//!   gradients; AdamW's two moments in the moment dtype. With ZeRO-1 the master copy and the
//!   moments are sharded over the data-parallel ranks that hold the same weights (`dp` for dense
//!   weights, `dp·tp/ep` for routed experts).
//! - Activations kept for backward, per token and layer, in `precision.compute` (no
//!   recomputation; router scores and softmax statistics in f32), sharded over `tp` (sequence
//!   parallelism). Under 1F1B the first stage holds `pp` micro-batches of its `n_layers/pp`
//!   layers. The last stage adds the f32 logits of one micro-batch (`vocab/tp` per token).

use serde::Serialize;

use crate::params::{layer_params, mtp_module_params, norm_params, LayerParams};
use crate::types::{Dtype, Spec};

/// A parallel layout: tensor, pipeline, expert and data parallel degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub tp: u64,
    pub pp: u64,
    pub ep: u64,
    pub dp: u64,
}

impl Layout {
    pub fn gpus(&self) -> u64 {
        self.tp * self.pp * self.dp
    }

    /// Why `compile --parallel` and `train` cannot run this layout yet, if they cannot: they run
    /// data parallelism (with ZeRO-1 or without); expert and pipeline parallelism are to come,
    /// and tensor parallelism is not planned (`inspect` and `select` still model all four).
    pub fn unbuilt(&self) -> Option<String> {
        let what = [("tp", self.tp), ("pp", self.pp), ("ep", self.ep)].into_iter().find(|(_, v)| *v > 1)?;
        Some(match what.0 {
            "tp" => format!(
                "tp = {}: tensor parallelism is not part of dsv3c (DeepSeek-V3 trains without it: use dp, ep and pp)",
                what.1
            ),
            k => format!(
                "{k} = {}: only data parallelism (dp, with ZeRO-1 or without) runs in this build; expert and pipeline parallelism are not built yet",
                what.1
            ),
        })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tp={},pp={},ep={},dp={}", self.tp, self.pp, self.ep, self.dp)
    }
}

/// Why a layout cannot run a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("tp·pp·dp = {product} but there are {gpus} GPUs")]
    GpuCount { product: u64, gpus: u64 },
    #[error("tp = {tp} does not divide the {heads} attention heads")]
    Heads { tp: u64, heads: u64 },
    #[error("pp = {pp} exceeds the {layers} layers")]
    Stages { pp: u64, layers: u64 },
    #[error("ep = {ep} does not divide dp·tp = {group}: expert-parallel ranks are taken from the data- and tensor-parallel ranks")]
    ExpertGroup { ep: u64, group: u64 },
    #[error("ep = {ep} does not divide the {experts} routed experts")]
    Experts { ep: u64, experts: u64 },
    #[error("ep = {0} but the model has no MoE layers")]
    NoExperts(u64),
    #[error("cannot parse parallel layout `{0}`: expected e.g. tp=8,pp=4,ep=8,dp=2 (keys tp, pp, ep, dp; missing ones are 1, dp defaults to the rest)")]
    Syntax(String),
}

impl Layout {
    /// Parses `tp=8,pp=4,ep=8,dp=2`; missing degrees are 1, except `dp`, which takes the GPUs left.
    pub fn parse(text: &str, gpus: Option<u64>) -> Result<Layout, LayoutError> {
        let mut l = Layout { tp: 1, pp: 1, ep: 1, dp: 0 };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| LayoutError::Syntax(text.to_string()))?;
            let v: u64 = v.trim().parse().map_err(|_| LayoutError::Syntax(text.to_string()))?;
            match k.trim() {
                "tp" => l.tp = v,
                "pp" => l.pp = v,
                "ep" => l.ep = v,
                "dp" => l.dp = v,
                _ => return Err(LayoutError::Syntax(text.to_string())),
            }
        }
        for (name, v) in [("tp", l.tp), ("pp", l.pp), ("ep", l.ep)] {
            if v == 0 {
                return Err(LayoutError::Zero(name));
            }
        }
        if l.dp == 0 {
            l.dp = match gpus {
                Some(g) if g % (l.tp * l.pp) == 0 && g >= l.tp * l.pp => g / (l.tp * l.pp),
                Some(g) => return Err(LayoutError::GpuCount { product: l.tp * l.pp, gpus: g }),
                None => 1,
            };
        }
        Ok(l)
    }

    /// Checks the layout against a spec and a GPU count.
    pub fn check(&self, s: &Spec, gpus: u64) -> Result<(), LayoutError> {
        for (name, v) in [("tp", self.tp), ("pp", self.pp), ("ep", self.ep), ("dp", self.dp)] {
            if v == 0 {
                return Err(LayoutError::Zero(name));
            }
        }
        if self.gpus() != gpus {
            return Err(LayoutError::GpuCount { product: self.gpus(), gpus });
        }
        let heads = s.attention.mla.n_heads;
        if !heads.is_multiple_of(self.tp) {
            return Err(LayoutError::Heads { tp: self.tp, heads });
        }
        if self.pp > s.n_layers {
            return Err(LayoutError::Stages { pp: self.pp, layers: s.n_layers });
        }
        if !(self.dp * self.tp).is_multiple_of(self.ep) {
            return Err(LayoutError::ExpertGroup { ep: self.ep, group: self.dp * self.tp });
        }
        match &s.moe {
            Some(m) if m.n_routed_experts % self.ep != 0 => {
                Err(LayoutError::Experts { ep: self.ep, experts: m.n_routed_experts })
            }
            None if self.ep > 1 => Err(LayoutError::NoExperts(self.ep)),
            _ => Ok(()),
        }
    }
}

/// Training-run settings that memory depends on but the spec does not fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunShape {
    /// Sequences per micro-batch per data-parallel rank.
    pub micro_batch: u64,
    pub seq_len: u64,
    /// Dtype of AdamW's moments.
    pub moments: Dtype,
    /// ZeRO stage: 0 (nothing sharded) or 1 (master weights and moments sharded).
    pub zero: u8,
}

/// Bytes per GPU, on the busiest pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub layout: Layout,
    pub run: RunShape,
    /// Parameters held by this GPU.
    pub params: f64,
    pub weights: f64,
    pub master: f64,
    pub gradients: f64,
    pub optimizer: f64,
    pub activations: f64,
    pub total: f64,
}

/// Activation bytes kept for backward by one layer, per token (before tp sharding).
fn layer_activation_bytes(s: &Spec, lp: &LayerParams, moe: bool) -> f64 {
    let a = s.precision.compute.bytes() as f64;
    let d = s.d_model as f64;
    let m = &s.attention.mla;
    let h = m.n_heads as f64;
    let mut e = 0.0;
    // Attention: block input and its norm, q path, kv path, expanded k/v, output, softmax stats.
    e += 2.0 * d;
    if m.q_lora_rank > 0 {
        e += 2.0 * m.q_lora_rank as f64;
    }
    e += h * m.qk_head_dim() as f64;
    e += (m.kv_lora_rank + m.qk_rope_head_dim) as f64 + m.kv_lora_rank as f64 + m.qk_rope_head_dim as f64;
    e += h * (m.qk_nope_head_dim + m.v_head_dim) as f64;
    e += h * m.v_head_dim as f64;
    let mut bytes = e * a + h * 4.0;
    // FFN: block input and its norm, then the SwiGLU inputs and product.
    bytes += 2.0 * d * a;
    match (&s.moe, moe) {
        (Some(x), true) => {
            let i = x.moe_intermediate_size as f64;
            bytes += x.n_routed_experts as f64 * 4.0; // router scores (f32)
                                                      // Per routed slot: its expert, weight, place in the sorted rows and back (i32 and f32),
                                                      // then the dispatched input, gate, up, product and the expert's output (combine's input).
            bytes += x.top_k as f64 * (4.0 * 4.0 + (2.0 * d + 3.0 * i) * a);
            bytes += x.n_shared_experts as f64 * 3.0 * i * a;
        }
        _ => bytes += 3.0 * (lp.dense_ffn as f64 / (3.0 * d).max(1.0)) * a,
    }
    bytes
}

/// Memory per GPU of `s` under `layout` and `run`.
pub fn memory(s: &Spec, layout: Layout, run: RunShape) -> Memory {
    let (tp, pp, ep, dp) = (layout.tp as f64, layout.pp as f64, layout.ep as f64, layout.dp as f64);
    let dense = layer_params(s, false);
    let moe = layer_params(s, true);
    let d = s.d_model as f64;
    let layers_per_stage = s.n_layers.div_ceil(layout.pp);

    // Which layers the worst stage holds: take the first stage's share of dense and MoE layers
    // when pp > 1 (dense layers come first), and all of them otherwise.
    let nd = s.n_dense_layers().min(layers_per_stage) as f64;
    let nm = (layers_per_stage - nd as u64).min(s.n_moe_layers()) as f64;
    let last_nm = s.n_moe_layers().min(layers_per_stage) as f64;
    let last_nd = (layers_per_stage as f64 - last_nm).max(0.0);

    let emb = (s.vocab_size * s.d_model) as f64;
    let head = if s.tie_embeddings { 0.0 } else { emb };
    let (mtp_own, mtp_layer) = mtp_module_params(s);
    let depth = s.mtp_depth() as f64;
    let final_norm = norm_params(&s.norm, s.d_model) as f64;

    // The non-expert projection matrices of a layer (what the FP8 GEMMs read besides the routed
    // experts): attention without its low-rank norms, the dense or shared-expert FFN.
    let m = &s.attention.mla;
    let lora_norms =
        if m.q_lora_rank > 0 { norm_params(&s.norm, m.q_lora_rank) } else { 0 } + norm_params(&s.norm, m.kv_lora_rank);
    let projections = |lp: &LayerParams| (lp.attention() - lora_norms + lp.dense_ffn + lp.shared_experts) as f64;
    // (non-expert, routed-expert, non-expert projection) parameters of a stage, before sharding.
    let stage = |nd: f64, nm: f64, first: bool, last: bool| -> (f64, f64, f64) {
        let mut dense_part = nd * dense.total() as f64 + nm * (moe.total() - moe.routed_experts) as f64;
        let mut experts = nm * moe.routed_experts as f64;
        let mut proj = nd * projections(&dense) + nm * projections(&moe);
        if first {
            dense_part += emb;
        }
        if last {
            dense_part += head + final_norm + depth * (mtp_own + mtp_layer.total() - mtp_layer.routed_experts) as f64;
            experts += depth * mtp_layer.routed_experts as f64;
            proj += depth * projections(&mtp_layer);
        }
        (dense_part, experts, proj)
    };
    let first = stage(nd, nm, true, layout.pp == 1);
    let last = stage(last_nd, last_nm, layout.pp == 1, true);
    let shard = |(non_expert, expert, proj): (f64, f64, f64)| (non_expert / tp, expert / ep, proj / tp);
    let (f_dense, f_exp, f_proj) = shard(first);
    let (l_dense, l_exp, l_proj) = shard(last);
    // Bytes per element of an FP8 weight copy: the e4m3 byte and its share of the block's scale.
    let fp8_bytes = s.precision.fp8.as_ref().map(|f| 1.0 + 4.0 / (f.weight_block as f64).powi(2));

    let p_bytes = s.precision.param.bytes() as f64;
    let has_master = s.precision.master != s.precision.param;
    let mom = 2.0 * run.moments.bytes() as f64;
    let edp = (dp * tp / ep).max(1.0);
    let zero = |x: f64, group: f64| if run.zero >= 1 { x / group } else { x };
    let cost = |dense_p: f64, exp_p: f64, proj: f64| -> (f64, f64, f64, f64, f64) {
        let params = dense_p + exp_p;
        let weights = match fp8_bytes {
            Some(q) => (params - exp_p - proj) * p_bytes + (exp_p + proj) * q,
            None => params * p_bytes,
        };
        let master = if has_master { zero(dense_p * 4.0, dp) + zero(exp_p * 4.0, edp) } else { 0.0 };
        let grads = params * 4.0;
        let opt = zero(dense_p * mom, dp) + zero(exp_p * mom, edp);
        (params, weights, master, grads, opt)
    };

    // Activations: the first stage keeps pp micro-batches of its layers; the last one micro-batch
    // of its layers plus the logits.
    let tokens = (run.micro_batch * run.seq_len) as f64;
    let per_tok =
        |nd: f64, nm: f64| nd * layer_activation_bytes(s, &dense, false) + nm * layer_activation_bytes(s, &moe, true);
    let first_act = pp * tokens * per_tok(nd, nm) / tp;
    let mtp_act =
        depth * (layer_activation_bytes(s, &mtp_layer, s.moe.is_some()) + 4.0 * d * s.precision.compute.bytes() as f64);
    // The main and MTP logits, live together at the MTP head (stored in the compute dtype; the
    // fused cross-entropy overwrites them with their gradient).
    let logits = (1.0 + depth) * tokens * s.vocab_size as f64 * s.precision.compute.bytes() as f64 / tp;
    let last_act = tokens * (per_tok(last_nd, last_nm) + mtp_act) / tp + logits;
    let first_act = if layout.pp == 1 { first_act + logits + tokens * mtp_act / tp } else { first_act };

    let a = cost(f_dense, f_exp, f_proj);
    let b = cost(l_dense, l_exp, l_proj);
    let total_a = a.1 + a.2 + a.3 + a.4 + first_act;
    let total_b = b.1 + b.2 + b.3 + b.4 + last_act;
    let ((params, weights, master, gradients, optimizer), activations, total) =
        if total_a >= total_b || layout.pp == 1 { (a, first_act, total_a) } else { (b, last_act, total_b) };
    Memory { layout, run, params, weights, master, gradients, optimizer, activations, total }
}
