//! Memory per GPU for a parallel layout: weights, gradients, optimizer states, activations.
//!
//! The model (stated so a reader can check it):
//! - World = `tp·pp·dp`. Routed experts are sharded over `ep` ranks taken inside `dp·tp`
//!   (DeepSeek-V3 runs EP across its data-parallel ranks); everything else over `tp` and `pp`.
//!   Pipeline stages hold the layers `stage_layers` gives them (an even split, the first stages
//!   one more when it does not divide); the first stage also holds the embedding, the last the
//!   final norm, head and MTP modules (and a copy of the embedding for them or a tied head); every
//!   stage is modelled and the largest reported.
//! - Weights in `precision.param`, except that under the FP8 recipe the projection matrices the
//!   FP8 GEMMs read (attention, dense and expert FFNs) are held as E4M3 copies with one f32
//!   scale per `weight_block`² block instead; an fp32 master copy when `precision.master` differs; fp32
//!   gradients; AdamW's two moments in the moment dtype. With ZeRO-1 the master copy and the
//!   moments are sharded over the data-parallel ranks that hold the same weights (`dp` for dense
//!   weights, `dp·tp/ep` for routed experts).
//! - Activations kept for backward, per token and layer, in `precision.compute` (router scores
//!   and softmax statistics in f32; with selective recomputation, no norm outputs, MLA
//!   up-projections or SwiGLU products; with FP8 caching, the routed experts' inputs, SwiGLU
//!   inputs and outputs in E4M3 with a scale per 128 values), sharded over `tp` (sequence
//!   parallelism). Under 1F1B stage `s` holds `pp - s` micro-batches of its layers, and the
//!   backward's working set: one more layer of one micro-batch at full precision (its
//!   activations' gradients; what recomputation makes again and FP8 caching reads back). The last
//!   stage adds its MTP modules and the logits of one micro-batch (`vocab/tp` per token). Under
//!   expert parallelism a rank's experts keep `capacity · top_k` rows per token (every routed
//!   expert's one row without a capacity factor: the worst routing's buffers).

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

    /// Why `compile --parallel` and `train` cannot run this layout, if they cannot: they run
    /// data, expert and pipeline parallelism; tensor parallelism is not planned (`inspect` and
    /// `select` still model it).
    pub fn unbuilt(&self) -> Option<String> {
        (self.tp > 1).then(|| {
            format!(
                "tp = {}: tensor parallelism is not part of dsv3c (DeepSeek-V3 trains without it: use dp, ep and pp)",
                self.tp
            )
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

/// The layers of pipeline stage `stage` of `stages`: as even a split as there is, the first
/// stages taking one more when the layers do not divide (the last stage also holds the head and
/// the MTP modules).
pub fn stage_layers(layers: u64, stages: u64, stage: u64) -> std::ops::Range<u64> {
    let (base, extra) = (layers / stages.max(1), layers % stages.max(1));
    let start = stage * base + stage.min(extra);
    start..start + base + u64::from(stage < extra)
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
    /// With expert parallelism: the rows an expert keeps at most, as a multiple of a balanced
    /// share (none: every row, however the routing falls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_capacity: Option<f64>,
    /// Selective recomputation: norms, MLA up-projections and SwiGLU products are made again in
    /// the backward, not kept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recompute: bool,
    /// FP8 caching: the routed experts' inputs and SwiGLU inputs kept for the backward as E4M3
    /// with one f32 scale per 128 values.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fp8_cache: bool,
}

/// Bytes per GPU, on one pipeline stage (the busiest, from [`memory`]).
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

/// Activation bytes kept for backward by one layer, per token (before tp sharding). Each routed
/// slot keeps its place in the sorted rows and its weight; on one device, its expert's input,
/// SwiGLU inputs and product, and output. Under expert parallelism (`expert_rows`: the rows this
/// rank's experts keep per token of a rank) the routing rank keeps each slot's returned output
/// and the expert's rank its kept rows' input, SwiGLU inputs and product.
fn layer_activation_bytes(s: &Spec, lp: &LayerParams, moe: bool, expert_rows: Option<f64>, run: RunShape) -> f64 {
    let recompute = run.recompute;
    let a = s.precision.compute.bytes() as f64;
    let d = s.d_model as f64;
    let m = &s.attention.mla;
    let h = m.n_heads as f64;
    // What selective recomputation does not keep: a norm's output, an up-projection's, a SwiGLU
    // product (its inputs, which the backward reads anyway, stay).
    let kept = |x: f64| if recompute { 0.0 } else { x };
    let mut e = 0.0;
    // Attention: block input and its norm, q path, kv path, expanded k/v, output, softmax stats.
    e += d + kept(d);
    let q = h * m.qk_head_dim() as f64;
    if m.q_lora_rank > 0 {
        e += m.q_lora_rank as f64 + kept(m.q_lora_rank as f64) + kept(q);
    } else {
        e += q;
    }
    e += (m.kv_lora_rank + m.qk_rope_head_dim) as f64 + kept(m.kv_lora_rank as f64) + m.qk_rope_head_dim as f64;
    e += kept(h * (m.qk_nope_head_dim + m.v_head_dim) as f64);
    e += h * m.v_head_dim as f64;
    let mut bytes = e * a + h * 4.0;
    // FFN: block input and its norm, then the SwiGLU inputs and product.
    bytes += (d + kept(d)) * a;
    match (&s.moe, moe) {
        (Some(x), true) => {
            let i = x.moe_intermediate_size as f64;
            let k = x.top_k as f64;
            // An expert row's input and SwiGLU inputs (and each slot's output): in the compute
            // dtype, or in E4M3 with a scale per 128 values.
            let fp8 = |n: f64| n + 4.0 * (n / 128.0).ceil();
            let (input, swiglu_in) = if run.fp8_cache { (fp8(d), 2.0 * fp8(i)) } else { (d * a, 2.0 * i * a) };
            bytes += x.n_routed_experts as f64 * 4.0; // router scores (f32)
                                                      // Per routed slot: its expert, weight, place in the sorted rows and back (i32 and f32).
            bytes += k * 4.0 * 4.0;
            let row = input + swiglu_in + kept(i) * a;
            // Each slot's expert output, which the combine's backward reads.
            let output = if run.fp8_cache { fp8(d) } else { d * a };
            bytes += match expert_rows {
                // The dispatched input, gate, up, product and the expert's output (combine's input).
                None => k * (row + output),
                Some(rows) => k * output + rows * row,
            };
            bytes += x.n_shared_experts as f64 * (2.0 * i + kept(i)) * a;
        }
        _ => {
            let i = lp.dense_ffn as f64 / (3.0 * d).max(1.0);
            bytes += (2.0 * i + kept(i)) * a
        }
    }
    bytes
}

/// Rows an expert-parallel rank's experts keep per token it routes: `capacity · top_k` (a balanced
/// share, scaled), at most every routed expert's one row; none without expert parallelism.
fn expert_rows(s: &Spec, layout: Layout, run: RunShape) -> Option<f64> {
    let x = s.moe.as_ref().filter(|_| layout.ep > 1)?;
    let all = x.n_routed_experts as f64;
    Some(run.expert_capacity.map_or(all, |f| (f * x.top_k as f64).min(all)))
}

/// Memory per GPU of `s` under `layout` and `run`: every pipeline stage's, and the largest
/// reported.
pub fn memory(s: &Spec, layout: Layout, run: RunShape) -> Memory {
    (0..layout.pp)
        .map(|stage| stage_memory(s, layout, run, stage))
        .max_by(|a, b| a.total.total_cmp(&b.total))
        .unwrap_or_else(|| stage_memory(s, layout, run, 0))
}

/// Memory per GPU of pipeline stage `stage` (`stage_layers` of the model; the embedding on the
/// first, the head and MTP modules on the last — with a copy of the embedding for them, or for a
/// tied head — and under 1F1B `pp - stage` micro-batches in flight).
pub fn stage_memory(s: &Spec, layout: Layout, run: RunShape, stage: u64) -> Memory {
    let (tp, pp, ep, dp) = (layout.tp as f64, layout.pp as f64, layout.ep as f64, layout.dp as f64);
    let dense = layer_params(s, false);
    let moe = layer_params(s, true);
    let d = s.d_model as f64;
    let layers = stage_layers(s.n_layers, layout.pp, stage);
    let nd = layers.clone().filter(|&l| l < s.n_dense_layers()).count() as f64;
    let nm = layers.count() as f64 - nd;
    let (first, last) = (stage == 0, stage + 1 == layout.pp);

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
    // The stage's (non-expert, routed-expert, non-expert projection) parameters, before sharding.
    let mut non_expert = nd * dense.total() as f64 + nm * (moe.total() - moe.routed_experts) as f64;
    let mut experts = nm * moe.routed_experts as f64;
    let mut proj = nd * projections(&dense) + nm * projections(&moe);
    if first || (last && (s.mtp.is_some() || s.tie_embeddings)) {
        non_expert += emb;
    }
    if last {
        non_expert += head + final_norm + depth * (mtp_own + mtp_layer.total() - mtp_layer.routed_experts) as f64;
        experts += depth * mtp_layer.routed_experts as f64;
        proj += depth * projections(&mtp_layer);
    }
    let (non_expert, experts, proj) = (non_expert / tp, experts / ep, proj / tp);
    // Bytes per element of an FP8 weight copy: the e4m3 byte and its share of the block's scale.
    let fp8_bytes = s.precision.fp8.as_ref().map(|f| 1.0 + 4.0 / (f.weight_block as f64).powi(2));

    let p_bytes = s.precision.param.bytes() as f64;
    let has_master = s.precision.master != s.precision.param;
    let mom = 2.0 * run.moments.bytes() as f64;
    let edp = (dp * tp / ep).max(1.0);
    let zero = |x: f64, group: f64| if run.zero >= 1 { x / group } else { x };
    let params = non_expert + experts;
    let weights = match fp8_bytes {
        Some(q) => (params - experts - proj) * p_bytes + (experts + proj) * q,
        None => params * p_bytes,
    };
    let master = if has_master { zero(non_expert * 4.0, dp) + zero(experts * 4.0, edp) } else { 0.0 };
    let gradients = params * 4.0;
    let optimizer = zero(non_expert * mom, dp) + zero(experts * mom, edp);

    // Activations: `pp - stage` micro-batches of the stage's layers in flight; the last stage
    // adds the MTP modules and the logits of its one micro-batch.
    let tokens = (run.micro_batch * run.seq_len) as f64;
    let rows = expert_rows(s, layout, run);
    let per_tok = |nd: f64, nm: f64| {
        nd * layer_activation_bytes(s, &dense, false, None, run) + nm * layer_activation_bytes(s, &moe, true, rows, run)
    };
    let mut activations = (pp - stage as f64) * tokens * per_tok(nd, nm) / tp;
    // The backward's working set: one layer of one micro-batch at full precision — the gradients
    // of its activations, and what selective recomputation makes again or FP8 caching reads back.
    let full = RunShape { recompute: false, fp8_cache: false, ..run };
    let working = [(nd, false, &dense), (nm, true, &moe)]
        .iter()
        .filter(|(n, _, _)| *n > 0.0)
        .map(|&(_, is_moe, lp)| layer_activation_bytes(s, lp, is_moe, rows, full))
        .fold(0.0, f64::max);
    activations += tokens * working / tp;
    if last {
        let mtp_act = depth
            * (layer_activation_bytes(s, &mtp_layer, s.moe.is_some(), rows, run)
                + 4.0 * d * s.precision.compute.bytes() as f64);
        // The main and MTP logits, live together at the MTP head (stored in the compute dtype; the
        // fused cross-entropy overwrites them with their gradient).
        let logits = (1.0 + depth) * tokens * s.vocab_size as f64 * s.precision.compute.bytes() as f64 / tp;
        activations += tokens * mtp_act / tp + logits;
    }
    let total = weights + master + gradients + optimizer + activations;
    Memory { layout, run, params, weights, master, gradients, optimizer, activations, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_split_the_layers_evenly_in_order() {
        for (layers, stages) in [(61u64, 16u64), (3, 3), (4, 2), (7, 3), (2, 2)] {
            let all: Vec<u64> = (0..stages).flat_map(|s| stage_layers(layers, stages, s)).collect();
            assert_eq!(all, (0..layers).collect::<Vec<_>>());
            let sizes: Vec<u64> = (0..stages).map(|s| stage_layers(layers, stages, s).count() as u64).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
    }
}
