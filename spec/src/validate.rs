//! Validation: every constraint the compiler relies on, each a named [`Rule`].
//!
//! Validation runs on the typed spec and reports problems by field path; the loader turns the
//! paths into line and column. All problems are reported, not just the first.

use crate::types::{LayerAttention, Norm, Spec};

/// A validation rule. Each has a stable code, used in diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A size or count lies outside the range the compiler supports.
    Range,
    /// A real number is not finite, or not in its open/closed interval.
    RealRange,
    /// `name` must be usable as a folder name.
    Name,
    /// Without `moe`, every layer is dense: `dense.n_layers` must equal `n_layers`.
    DenseCoversAllLayers,
    /// With `moe`, at least one layer must be MoE: `dense.n_layers < n_layers`.
    DenseLeavesMoeLayers,
    /// A model needs an FFN: `dense` or `moe` (or both).
    FfnMissing,
    /// RoPE rotates pairs: `qk_rope_head_dim` must be even.
    RopeDimEven,
    /// YaRN's original context must not exceed `max_seq_len`.
    YarnOriginalLength,
    /// YaRN's `beta_fast` must exceed `beta_slow`.
    YarnBetas,
    /// The attention pattern must name at least one layer kind, and not be longer than the stack.
    PatternLength,
    /// The pattern uses `swa` but no `attention.swa` block says its window.
    SwaMissing,
    /// `attention.swa` is given but no layer in the pattern uses it.
    SwaUnused,
    /// The window must be shorter than `max_seq_len` (else it is full attention).
    SwaWindow,
    /// Sink tokens must be fewer than the window.
    SwaSinks,
    /// `top_k` must be between 1 and `n_routed_experts`.
    TopK,
    /// `n_group` must divide `n_routed_experts`.
    GroupsDivideExperts,
    /// `top_groups` must be between 1 and `n_group`.
    TopGroups,
    /// The chosen groups must hold at least `top_k` experts: `top_groups · experts/n_group ≥ top_k`.
    TopGroupsCapacity,
    /// A group's score is the sum of its top-2 expert scores: groups need ≥ 2 experts.
    GroupSize,
    /// The master copy must be at least as wide as the parameters.
    MasterPrecision,
    /// FP8 tiles and blocks must be powers of two in [16, 512].
    Fp8TileSize,
    /// Scales are promoted per K block: the activation tile must equal the weight block.
    Fp8TileMatchesBlock,
    /// Every FP8 GEMM's K dim must be a multiple of the activation tile.
    Fp8TilesK,
    /// The FP8 KV cache keeps one scale per 128 latent values: `kv_lora_rank % 128 == 0`.
    Fp8KvCache,
}

impl Rule {
    /// Every rule, for exhaustive tests.
    pub const ALL: [Rule; 24] = [
        Rule::Range,
        Rule::RealRange,
        Rule::Name,
        Rule::DenseCoversAllLayers,
        Rule::DenseLeavesMoeLayers,
        Rule::FfnMissing,
        Rule::RopeDimEven,
        Rule::YarnOriginalLength,
        Rule::YarnBetas,
        Rule::PatternLength,
        Rule::SwaMissing,
        Rule::SwaUnused,
        Rule::SwaWindow,
        Rule::SwaSinks,
        Rule::TopK,
        Rule::GroupsDivideExperts,
        Rule::TopGroups,
        Rule::TopGroupsCapacity,
        Rule::GroupSize,
        Rule::MasterPrecision,
        Rule::Fp8TileSize,
        Rule::Fp8TileMatchesBlock,
        Rule::Fp8TilesK,
        Rule::Fp8KvCache,
    ];

    /// Stable code, e.g. `top-groups-capacity`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Range => "range",
            Rule::RealRange => "real-range",
            Rule::Name => "name",
            Rule::DenseCoversAllLayers => "dense-covers-all-layers",
            Rule::DenseLeavesMoeLayers => "dense-leaves-moe-layers",
            Rule::FfnMissing => "ffn-missing",
            Rule::RopeDimEven => "rope-dim-even",
            Rule::YarnOriginalLength => "yarn-original-length",
            Rule::YarnBetas => "yarn-betas",
            Rule::PatternLength => "pattern-length",
            Rule::SwaMissing => "swa-missing",
            Rule::SwaUnused => "swa-unused",
            Rule::SwaWindow => "swa-window",
            Rule::SwaSinks => "swa-sinks",
            Rule::TopK => "top-k",
            Rule::GroupsDivideExperts => "groups-divide-experts",
            Rule::TopGroups => "top-groups",
            Rule::TopGroupsCapacity => "top-groups-capacity",
            Rule::GroupSize => "group-size",
            Rule::MasterPrecision => "master-precision",
            Rule::Fp8TileSize => "fp8-tile-size",
            Rule::Fp8TileMatchesBlock => "fp8-tile-matches-block",
            Rule::Fp8TilesK => "fp8-tiles-k",
            Rule::Fp8KvCache => "fp8-kv-cache",
        }
    }
}

/// A problem found by validation, before it is located in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: Rule,
    pub path: String,
    pub message: String,
    pub help: String,
}

/// Upper bounds on sizes. They keep every derived count inside u64 and every index inside u32.
pub mod bounds {
    pub const VOCAB: u64 = 1 << 24;
    pub const D_MODEL: u64 = 1 << 16;
    pub const LAYERS: u64 = 512;
    pub const SEQ_LEN: u64 = 1 << 24;
    pub const HEADS: u64 = 1024;
    pub const HEAD_DIM: u64 = 1024;
    pub const RANK: u64 = 1 << 16;
    pub const FFN: u64 = 1 << 18;
    pub const EXPERTS: u64 = 4096;
    pub const MTP_DEPTH: u64 = 16;
}

struct Checker<'a> {
    spec: &'a Spec,
    out: Vec<Violation>,
}

impl Checker<'_> {
    fn fail(&mut self, rule: Rule, path: &str, message: String, help: impl Into<String>) {
        self.out.push(Violation { rule, path: path.to_string(), message, help: help.into() });
    }

    fn range(&mut self, path: &str, v: u64, lo: u64, hi: u64) -> bool {
        if v < lo || v > hi {
            self.fail(
                Rule::Range,
                path,
                format!("{path} = {v} is out of range"),
                format!("use a value in {lo}..={hi}"),
            );
            return false;
        }
        true
    }

    /// A real in (lo, hi) or [lo, hi] as `closed` says; `hi = INFINITY` for no upper bound.
    fn real(&mut self, path: &str, v: f64, lo: f64, hi: f64, closed_lo: bool) -> bool {
        let ok = v.is_finite() && (if closed_lo { v >= lo } else { v > lo }) && v <= hi;
        if !ok {
            let lo_s = if closed_lo { format!(">= {lo}") } else { format!("> {lo}") };
            let hi_s = if hi.is_finite() { format!(" and <= {hi}") } else { String::new() };
            self.fail(
                Rule::RealRange,
                path,
                format!("{path} = {v} is out of range"),
                format!("use a finite number {lo_s}{hi_s}"),
            );
        }
        ok
    }
}

/// Checks every rule; returns all violations (empty when the spec is valid).
pub fn validate(spec: &Spec) -> Vec<Violation> {
    use bounds::*;
    let mut c = Checker { spec, out: Vec::new() };
    let s = c.spec;

    if s.name.is_empty()
        || !s.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        || s.name.starts_with('.')
    {
        c.fail(
            Rule::Name,
            "name",
            format!("name `{}` cannot be used as a folder name", s.name),
            "use letters, digits, `-`, `_` and `.` (not leading)",
        );
    }
    c.range("vocab_size", s.vocab_size, 2, VOCAB);
    c.range("d_model", s.d_model, 1, D_MODEL);
    c.range("n_layers", s.n_layers, 1, LAYERS);
    c.range("max_seq_len", s.max_seq_len, 1, SEQ_LEN);
    c.real("init_std", s.init_std, 0.0, f64::INFINITY, false);
    match s.norm {
        Norm::Rmsnorm { eps } => {
            c.real("norm.eps", eps, 0.0, 1.0, false);
        }
        Norm::Dyt { alpha_init } => {
            c.real("norm.alpha_init", alpha_init, 0.0, f64::INFINITY, false);
        }
    }

    // FFN layout.
    match (&s.dense, &s.moe) {
        (None, None) => c.fail(
            Rule::FfnMissing,
            "",
            "the spec has neither `dense` nor `moe`: layers need an FFN".into(),
            "add a `dense:` block, a `moe:` block, or both",
        ),
        (Some(d), None) => {
            c.range("dense.intermediate_size", d.intermediate_size, 1, FFN);
            if d.n_layers != s.n_layers {
                c.fail(
                    Rule::DenseCoversAllLayers,
                    "dense.n_layers",
                    format!(
                        "dense.n_layers = {} but there is no `moe` block, so all {} layers are dense",
                        d.n_layers, s.n_layers
                    ),
                    format!("set dense.n_layers to {} or add a `moe:` block", s.n_layers),
                );
            }
        }
        (Some(d), Some(_)) => {
            c.range("dense.intermediate_size", d.intermediate_size, 1, FFN);
            if d.n_layers >= s.n_layers {
                c.fail(
                    Rule::DenseLeavesMoeLayers,
                    "dense.n_layers",
                    format!("dense.n_layers = {} leaves no MoE layer out of n_layers = {}", d.n_layers, s.n_layers),
                    format!("use 0..{} dense layers, or remove the `moe:` block", s.n_layers),
                );
            }
        }
        (None, Some(_)) => {}
    }

    // Attention.
    let a = &s.attention;
    let m = &a.mla;
    c.range("attention.mla.n_heads", m.n_heads, 1, HEADS);
    c.range("attention.mla.q_lora_rank", m.q_lora_rank, 0, RANK);
    c.range("attention.mla.kv_lora_rank", m.kv_lora_rank, 1, RANK);
    c.range("attention.mla.qk_nope_head_dim", m.qk_nope_head_dim, 1, HEAD_DIM);
    c.range("attention.mla.v_head_dim", m.v_head_dim, 1, HEAD_DIM);
    if c.range("attention.mla.qk_rope_head_dim", m.qk_rope_head_dim, 2, HEAD_DIM)
        && !m.qk_rope_head_dim.is_multiple_of(2)
    {
        c.fail(
            Rule::RopeDimEven,
            "attention.mla.qk_rope_head_dim",
            format!("attention.mla.qk_rope_head_dim = {} is odd; RoPE rotates pairs of dims", m.qk_rope_head_dim),
            format!("use an even number such as {}", m.qk_rope_head_dim + 1),
        );
    }
    c.real("attention.mla.rope_theta", m.rope_theta, 1.0, f64::INFINITY, false);
    if let Some(y) = &m.yarn {
        c.real("attention.mla.yarn.factor", y.factor, 1.0, f64::INFINITY, true);
        c.real("attention.mla.yarn.beta_slow", y.beta_slow, 0.0, f64::INFINITY, false);
        c.real("attention.mla.yarn.beta_fast", y.beta_fast, 0.0, f64::INFINITY, false);
        c.real("attention.mla.yarn.mscale", y.mscale, 0.0, f64::INFINITY, true);
        c.real("attention.mla.yarn.mscale_all_dim", y.mscale_all_dim, 0.0, f64::INFINITY, true);
        if y.beta_fast.is_finite() && y.beta_slow.is_finite() && y.beta_fast <= y.beta_slow {
            c.fail(
                Rule::YarnBetas,
                "attention.mla.yarn.beta_fast",
                format!("yarn.beta_fast = {} must exceed yarn.beta_slow = {}", y.beta_fast, y.beta_slow),
                "DeepSeek-V3 uses beta_fast 32, beta_slow 1",
            );
        }
        if c.range(
            "attention.mla.yarn.original_max_position_embeddings",
            y.original_max_position_embeddings,
            1,
            SEQ_LEN,
        ) && y.original_max_position_embeddings > s.max_seq_len
        {
            c.fail(
                Rule::YarnOriginalLength,
                "attention.mla.yarn.original_max_position_embeddings",
                format!(
                    "yarn.original_max_position_embeddings = {} exceeds max_seq_len = {}; YaRN extends a shorter context",
                    y.original_max_position_embeddings, s.max_seq_len
                ),
                format!("use at most {} (DeepSeek-V3: 4096 extended by factor 40 to 163840)", s.max_seq_len),
            );
        }
    }
    if a.pattern.is_empty() || a.pattern.len() as u64 > s.n_layers.max(1) {
        c.fail(
            Rule::PatternLength,
            "attention.pattern",
            format!("attention.pattern has {} entries; it repeats over {} layers", a.pattern.len(), s.n_layers),
            format!("give between 1 and {} entries, e.g. [mla] or [swa, swa, swa, mla]", s.n_layers),
        );
    }
    let uses_swa = (0..s.n_layers.min(LAYERS)).any(|l| s.layer_attention(l) == LayerAttention::Swa);
    match (&a.swa, uses_swa) {
        (None, true) => {
            let i = a.pattern.iter().position(|p| *p == LayerAttention::Swa).unwrap_or(0);
            c.fail(
                Rule::SwaMissing,
                &format!("attention.pattern[{i}]"),
                "the pattern uses `swa` layers but there is no `attention.swa` block".into(),
                "add `swa: {window: 1024, sink_tokens: 4}` under `attention`",
            );
        }
        (Some(_), false) => c.fail(
            Rule::SwaUnused,
            "attention.swa",
            "attention.swa is given but no layer of the pattern uses it".into(),
            "add `swa` to attention.pattern (e.g. [swa, swa, swa, mla]) or remove the block",
        ),
        _ => {}
    }
    if let Some(w) = &a.swa {
        if c.range("attention.swa.window", w.window, 1, SEQ_LEN) && w.window >= s.max_seq_len {
            c.fail(
                Rule::SwaWindow,
                "attention.swa.window",
                format!(
                    "attention.swa.window = {} is not shorter than max_seq_len = {}: that is full attention",
                    w.window, s.max_seq_len
                ),
                format!("use a window below {}, or `mla` layers", s.max_seq_len),
            );
        }
        if w.sink_tokens >= w.window {
            c.fail(
                Rule::SwaSinks,
                "attention.swa.sink_tokens",
                format!("attention.swa.sink_tokens = {} must be fewer than the window ({})", w.sink_tokens, w.window),
                "a few sink tokens (e.g. 4) are typical",
            );
        }
    }

    // MoE.
    if let Some(moe) = &s.moe {
        let e = moe.n_routed_experts;
        let experts_ok = c.range("moe.n_routed_experts", e, 1, EXPERTS);
        c.range("moe.n_shared_experts", moe.n_shared_experts, 0, 64);
        c.range("moe.moe_intermediate_size", moe.moe_intermediate_size, 1, FFN);
        if experts_ok && (moe.top_k == 0 || moe.top_k > e) {
            c.fail(
                Rule::TopK,
                "moe.top_k",
                format!("moe.top_k = {} must be between 1 and n_routed_experts = {e}", moe.top_k),
                format!("use 1..={e}"),
            );
        }
        let groups_ok = c.range("moe.n_group", moe.n_group, 1, EXPERTS);
        if experts_ok && groups_ok {
            if e % moe.n_group != 0 {
                let divisors: Vec<String> = (1..=e).filter(|g| e % g == 0).map(|g| g.to_string()).collect();
                c.fail(
                    Rule::GroupsDivideExperts,
                    "moe.n_group",
                    format!("moe.n_group = {} does not divide n_routed_experts = {e}", moe.n_group),
                    format!("use one of {}", divisors.join(", ")),
                );
            } else if moe.top_groups == 0 || moe.top_groups > moe.n_group {
                c.fail(
                    Rule::TopGroups,
                    "moe.top_groups",
                    format!("moe.top_groups = {} must be between 1 and n_group = {}", moe.top_groups, moe.n_group),
                    format!("use 1..={}", moe.n_group),
                );
            } else {
                let per_group = e / moe.n_group;
                if moe.n_group > 1 && per_group < 2 {
                    c.fail(
                        Rule::GroupSize,
                        "moe.n_group",
                        format!("moe.n_group = {} leaves {per_group} expert per group; group scores sum each group's top-2 experts", moe.n_group),
                        format!("use at most {} groups", e / 2),
                    );
                }
                if moe.top_groups * per_group < moe.top_k && moe.top_k <= e {
                    c.fail(
                        Rule::TopGroupsCapacity,
                        "moe.top_groups",
                        format!(
                            "moe.top_groups = {} groups of {per_group} experts hold fewer than top_k = {} experts",
                            moe.top_groups, moe.top_k
                        ),
                        format!("use top_groups >= {}", moe.top_k.div_ceil(per_group)),
                    );
                }
            }
        }
        c.real("moe.route_scale", moe.route_scale, 0.0, f64::INFINITY, false);
        c.real("moe.bias_update_speed", moe.bias_update_speed, 0.0, 1.0, true);
        c.real("moe.seq_aux_alpha", moe.seq_aux_alpha, 0.0, f64::INFINITY, true);
    }

    if let Some(mtp) = &s.mtp {
        c.range("mtp.depth", mtp.depth, 1, MTP_DEPTH);
        c.real("mtp.loss_weight", mtp.loss_weight, 0.0, f64::INFINITY, false);
    }

    // Precision.
    let p = &s.precision;
    if p.master.bytes() < p.param.bytes() {
        c.fail(
            Rule::MasterPrecision,
            "precision.master",
            format!("precision.master = {} is narrower than precision.param = {}", p.master.name(), p.param.name()),
            "use `master: f32`",
        );
    }
    if let Some(f8) = &p.fp8 {
        let mut tiles_ok = true;
        for (path, v) in
            [("precision.fp8.activation_tile", f8.activation_tile), ("precision.fp8.weight_block", f8.weight_block)]
        {
            if !(16..=512).contains(&v) || !v.is_power_of_two() {
                tiles_ok = false;
                c.fail(
                    Rule::Fp8TileSize,
                    path,
                    format!("{path} = {v} is not a power of two in [16, 512]"),
                    "DeepSeek-V3 uses 128",
                );
            }
        }
        if tiles_ok && f8.activation_tile != f8.weight_block {
            tiles_ok = false;
            c.fail(
                Rule::Fp8TileMatchesBlock,
                "precision.fp8.weight_block",
                format!(
                    "precision.fp8.weight_block = {} differs from activation_tile = {}; both scale the same K blocks",
                    f8.weight_block, f8.activation_tile
                ),
                format!("use weight_block: {}", f8.activation_tile),
            );
        }
        if tiles_ok {
            for (path, k) in fp8_k_dims(s) {
                if k % f8.activation_tile != 0 {
                    c.fail(
                        Rule::Fp8TilesK,
                        path,
                        format!(
                            "{path} = {k} is a GEMM K dim that is not a multiple of the FP8 tile {}",
                            f8.activation_tile
                        ),
                        format!("use a multiple of {} (or a smaller activation_tile)", f8.activation_tile),
                    );
                }
            }
        }
    }
    if p.kv_cache == crate::types::KvCacheDtype::Fp8 && !m.kv_lora_rank.is_multiple_of(128) {
        c.fail(
            Rule::Fp8KvCache,
            "precision.kv_cache",
            format!("an FP8 KV cache scales each 128 latent values, but kv_lora_rank = {}", m.kv_lora_rank),
            "use `kv_cache: bf16`, or a kv_lora_rank that is a multiple of 128",
        );
    }
    c.out
}

/// The K dims of the GEMMs that run in FP8 under the recipe, each with the field that sets it.
pub fn fp8_k_dims(s: &Spec) -> Vec<(&'static str, u64)> {
    let m = &s.attention.mla;
    let mut ks = vec![("d_model", s.d_model), ("attention.mla.kv_lora_rank", m.kv_lora_rank)];
    if m.q_lora_rank > 0 {
        ks.push(("attention.mla.q_lora_rank", m.q_lora_rank));
    }
    // o_proj's input is the heads' concatenated values.
    ks.push(("attention.mla.v_head_dim", m.n_heads.saturating_mul(m.v_head_dim)));
    if let (Some(d), true) = (&s.dense, s.n_dense_layers() > 0) {
        ks.push(("dense.intermediate_size", d.intermediate_size));
    }
    if let Some(moe) = &s.moe {
        ks.push(("moe.moe_intermediate_size", moe.moe_intermediate_size));
    }
    ks
}
