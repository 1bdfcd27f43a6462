//! The spec language's types: what a DeepSeek-V3-family model spec says, field by field.
//!
//! Field names follow DeepSeek's config vocabulary where one exists (`q_lora_rank`,
//! `kv_lora_rank`, `qk_nope_head_dim`, `route_scale`, ...). Every struct rejects unknown fields.
//! Defaults are the DeepSeek-V3 values wherever the field is a knob rather than a size.

use serde::{Deserialize, Serialize};

/// A whole model: embedding, decoder stack, output head, and optional multi-token prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Short name; used for output folders (`generated/<name>/`).
    pub name: String,
    /// Vocabulary size (rows of the embedding and of the LM head).
    pub vocab_size: u64,
    /// Hidden size of the residual stream (`hidden_size` in HF configs).
    pub d_model: u64,
    /// Number of decoder layers (`num_hidden_layers`), not counting MTP modules.
    pub n_layers: u64,
    /// Longest sequence the positional encoding supports (`max_position_embeddings`).
    pub max_seq_len: u64,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// Standard deviation of the normal init of linear and embedding weights (`initializer_range`).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// The normalization used everywhere (block norms, latent norms, final norm).
    #[serde(default)]
    pub norm: Norm,
    /// The leading dense-FFN layers. Absent means every layer is MoE (requires `moe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<Dense>,
    /// Attention: MLA geometry, optional sliding window, and the per-layer pattern.
    pub attention: Attention,
    /// DeepSeekMoE FFN of the layers after the dense ones. Absent means every layer is dense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<Moe>,
    /// Multi-token prediction modules. Absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<Mtp>,
    /// Storage and compute dtypes, and the FP8 recipe.
    #[serde(default)]
    pub precision: Precision,
}

pub(crate) fn default_init_std() -> f64 {
    0.02
}

/// Normalization: RMSNorm or DynamicTanh (`y = w ⊙ tanh(α·x) + b`).
///
/// Written as `norm: {type: rmsnorm, eps: 1.0e-6}` or `norm: {type: dyt, alpha_init: 0.5}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NormRepr", into = "NormRepr")]
pub enum Norm {
    /// `w ⊙ x / sqrt(mean(x²) + eps)`.
    Rmsnorm { eps: f64 },
    /// DynamicTanh: `w ⊙ tanh(α·x) + b`, α a learned scalar per norm.
    Dyt { alpha_init: f64 },
}

/// The YAML form of [`Norm`]: a plain struct, so that serde_yaml keeps field locations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormRepr {
    #[serde(rename = "type")]
    kind: NormKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alpha_init: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NormKind {
    Rmsnorm,
    Dyt,
}

impl TryFrom<NormRepr> for Norm {
    type Error = String;
    fn try_from(r: NormRepr) -> Result<Self, String> {
        match (r.kind, r.eps, r.alpha_init) {
            (NormKind::Rmsnorm, eps, None) => Ok(Norm::Rmsnorm { eps: eps.unwrap_or_else(default_eps) }),
            (NormKind::Dyt, None, alpha) => Ok(Norm::Dyt { alpha_init: alpha.unwrap_or_else(default_dyt_alpha) }),
            (NormKind::Rmsnorm, _, Some(_)) => {
                Err("norm: `alpha_init` belongs to `type: dyt`; rmsnorm takes `eps`".into())
            }
            (NormKind::Dyt, Some(_), _) => Err("norm: `eps` belongs to `type: rmsnorm`; dyt takes `alpha_init`".into()),
        }
    }
}

impl From<Norm> for NormRepr {
    fn from(n: Norm) -> Self {
        match n {
            Norm::Rmsnorm { eps } => NormRepr { kind: NormKind::Rmsnorm, eps: Some(eps), alpha_init: None },
            Norm::Dyt { alpha_init } => NormRepr { kind: NormKind::Dyt, eps: None, alpha_init: Some(alpha_init) },
        }
    }
}

impl Default for Norm {
    fn default() -> Self {
        Norm::Rmsnorm { eps: default_eps() }
    }
}

fn default_eps() -> f64 {
    1e-6
}
fn default_dyt_alpha() -> f64 {
    0.5
}

/// The leading dense layers (`first_k_dense_replace`) and their SwiGLU size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    /// How many leading layers use the dense FFN (`first_k_dense_replace`).
    pub n_layers: u64,
    /// SwiGLU hidden size of the dense FFN (`intermediate_size`).
    pub intermediate_size: u64,
}

/// Attention of the decoder layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Multi-head latent attention geometry, shared by every layer.
    pub mla: Mla,
    /// Sliding-window attention: MLA geometry restricted to a window plus sink tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa: Option<Swa>,
    /// Layer pattern, repeated cyclically over the layers: e.g. `[swa, swa, swa, mla]`.
    #[serde(default = "default_pattern")]
    pub pattern: Vec<LayerAttention>,
}

fn default_pattern() -> Vec<LayerAttention> {
    vec![LayerAttention::Mla]
}

/// Which attention a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerAttention {
    /// Full causal multi-head latent attention.
    Mla,
    /// Causal MLA limited to the last `window` tokens plus the first `sink_tokens` tokens.
    Swa,
}

/// Multi-head latent attention (DeepSeek-V2/V3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mla {
    /// Attention heads (`num_attention_heads`).
    pub n_heads: u64,
    /// Rank of the query compression; 0 or absent means a direct query projection (`q_proj`).
    #[serde(default)]
    pub q_lora_rank: u64,
    /// Rank of the joint key-value compression (the cached latent).
    pub kv_lora_rank: u64,
    /// Per-head query/key dims that carry no position (`qk_nope_head_dim`).
    pub qk_nope_head_dim: u64,
    /// Per-head query/key dims that carry decoupled RoPE (`qk_rope_head_dim`); k's is shared by all heads.
    pub qk_rope_head_dim: u64,
    /// Per-head value dim (`v_head_dim`).
    pub v_head_dim: u64,
    /// RoPE base (`rope_theta`).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// YaRN context extension of the rope frequencies and softmax scale. Absent means plain RoPE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yarn: Option<Yarn>,
}

fn default_rope_theta() -> f64 {
    10000.0
}

/// YaRN rope scaling as DeepSeek-V3 uses it (`rope_scaling` with `type: yarn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Yarn {
    /// Context extension factor `s`.
    pub factor: f64,
    /// Context length the model was pre-trained at (`original_max_position_embeddings`).
    pub original_max_position_embeddings: u64,
    /// Rotations above which frequencies stay unchanged.
    #[serde(default = "default_beta_fast")]
    pub beta_fast: f64,
    /// Rotations below which frequencies are fully interpolated.
    #[serde(default = "default_beta_slow")]
    pub beta_slow: f64,
    /// Attention temperature coefficient of the query/key side.
    #[serde(default = "one")]
    pub mscale: f64,
    /// Attention temperature coefficient normalizing all dims.
    #[serde(default = "one")]
    pub mscale_all_dim: f64,
}

fn default_beta_fast() -> f64 {
    32.0
}
fn default_beta_slow() -> f64 {
    1.0
}
fn one() -> f64 {
    1.0
}

/// Sliding-window attention with attention-sink tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swa {
    /// Each query sees itself and the `window - 1` tokens before it.
    pub window: u64,
    /// The first `sink_tokens` positions stay visible to every query.
    #[serde(default)]
    pub sink_tokens: u64,
}

/// How router scores are computed from the gate logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunc {
    /// DeepSeek-V3: independent sigmoid per expert.
    Sigmoid,
    /// DeepSeek-V2: softmax over experts.
    Softmax,
}

/// DeepSeekMoE: shared experts plus routed experts chosen by group-limited top-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moe {
    /// Routed experts (`n_routed_experts`).
    pub n_routed_experts: u64,
    /// Shared experts, always active (`n_shared_experts`); their FFN size is this times the expert size.
    #[serde(default)]
    pub n_shared_experts: u64,
    /// Routed experts per token (`num_experts_per_tok`).
    pub top_k: u64,
    /// SwiGLU hidden size of one expert (`moe_intermediate_size`).
    pub moe_intermediate_size: u64,
    /// Router score function (`scoring_func`).
    #[serde(default = "default_score_func")]
    pub score_func: ScoreFunc,
    /// Expert groups for group-limited routing (`n_group`); 1 means plain top-k.
    #[serde(default = "one_u64")]
    pub n_group: u64,
    /// Groups a token may route into (`topk_group`), chosen by each group's sum of its top-2 scores.
    #[serde(default = "one_u64")]
    pub top_groups: u64,
    /// Multiplier on the routed experts' combined weights (`routed_scaling_factor`).
    #[serde(default = "one")]
    pub route_scale: f64,
    /// Normalize the top-k weights to sum to one before scaling (`norm_topk_prob`).
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    /// Aux-loss-free balancing: bias step γ after every training step; 0 disables the bias.
    #[serde(default = "default_bias_update_speed")]
    pub bias_update_speed: f64,
    /// Weight α of the complementary sequence-wise balance loss; 0 disables it.
    #[serde(default = "default_seq_aux_alpha")]
    pub seq_aux_alpha: f64,
}

fn default_score_func() -> ScoreFunc {
    ScoreFunc::Sigmoid
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_bias_update_speed() -> f64 {
    0.001
}
fn default_seq_aux_alpha() -> f64 {
    0.0001
}

/// Multi-token prediction: `depth` sequential modules predicting tokens `t+2 .. t+1+depth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mtp {
    /// Number of MTP modules (`num_nextn_predict_layers`).
    pub depth: u64,
    /// Weight λ of the averaged MTP loss added to the main loss.
    #[serde(default = "default_mtp_weight")]
    pub loss_weight: f64,
}

fn default_mtp_weight() -> f64 {
    0.3
}

/// A storage or compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }

    /// The name used in specs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

/// Dtypes of weights, their master copy and compute, plus the FP8 recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precision {
    /// The optimizer's copy of the weights.
    #[serde(default = "f32_dtype")]
    pub master: Dtype,
    /// The weights the forward pass reads.
    #[serde(default = "f32_dtype")]
    pub param: Dtype,
    /// Activations and the inputs/outputs of non-FP8 GEMMs.
    #[serde(default = "f32_dtype")]
    pub compute: Dtype,
    /// Block-scaled FP8 GEMMs for the linear layers of attention and FFNs. Absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp8: Option<Fp8>,
    /// Dtype of the cached MLA latent (`bf16`, or `fp8` in FlashMLA's 656-byte layout at 671B).
    #[serde(default)]
    pub kv_cache: KvCacheDtype,
}

fn f32_dtype() -> Dtype {
    Dtype::F32
}

impl Default for Precision {
    fn default() -> Self {
        Precision {
            master: Dtype::F32,
            param: Dtype::F32,
            compute: Dtype::F32,
            fp8: None,
            kv_cache: KvCacheDtype::default(),
        }
    }
}

/// Dtype of the inference KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// f32 latent and rope part (the CPU reference's exact cache).
    F32,
    #[default]
    Bf16,
    /// E4M3 latent with one f32 scale per 128 values; the rope part stays bf16.
    Fp8,
}

/// The FP8 format of the recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp8Format {
    /// 4 exponent bits, 3 mantissa bits, max 448; used for every tensor, gradients included.
    #[default]
    E4m3,
}

/// DeepSeek-V3's fine-grained FP8 recipe: 1×tile activation scales, block×block weight scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fp8 {
    #[serde(default)]
    pub format: Fp8Format,
    /// Activations get one f32 scale per 1×`activation_tile` tile along the GEMM's K dim.
    #[serde(default = "default_block")]
    pub activation_tile: u64,
    /// Weights get one f32 scale per `weight_block`×`weight_block` block.
    #[serde(default = "default_block")]
    pub weight_block: u64,
}

fn default_block() -> u64 {
    128
}

impl Spec {
    /// Layers that run the dense FFN (the first ones).
    pub fn n_dense_layers(&self) -> u64 {
        match (&self.dense, &self.moe) {
            (Some(d), Some(_)) => d.n_layers,
            (_, None) => self.n_layers,
            (None, Some(_)) => 0,
        }
    }

    /// Layers that run the MoE FFN.
    pub fn n_moe_layers(&self) -> u64 {
        self.n_layers.saturating_sub(self.n_dense_layers())
    }

    /// The attention kind of layer `layer`, from the cyclic pattern.
    pub fn layer_attention(&self, layer: u64) -> LayerAttention {
        let p = &self.attention.pattern;
        if p.is_empty() {
            return LayerAttention::Mla;
        }
        p[(layer % p.len() as u64) as usize]
    }

    /// How many layers run each attention kind: (mla, swa).
    pub fn attention_layer_counts(&self) -> (u64, u64) {
        (0..self.n_layers).fold((0, 0), |(m, s), l| match self.layer_attention(l) {
            LayerAttention::Mla => (m + 1, s),
            LayerAttention::Swa => (m, s + 1),
        })
    }

    /// MTP depth (0 when absent).
    pub fn mtp_depth(&self) -> u64 {
        self.mtp.as_ref().map_or(0, |m| m.depth)
    }
}

impl Mla {
    /// Query/key head dim: nope + rope.
    pub fn qk_head_dim(&self) -> u64 {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Softmax scale: `qk_head_dim^-1/2`, times `mscale²` under YaRN (DeepSeek-V3 semantics).
    pub fn softmax_scale(&self) -> f64 {
        let base = (self.qk_head_dim() as f64).powf(-0.5);
        match &self.yarn {
            Some(y) => {
                let m = yarn_get_mscale(y.factor, y.mscale_all_dim);
                base * m * m
            }
            None => base,
        }
    }
}

/// YaRN's attention temperature: `0.1·mscale·ln(factor) + 1` for factor > 1, else 1.
pub fn yarn_get_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}
