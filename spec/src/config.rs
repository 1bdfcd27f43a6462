//! Run recipes (`configs/*.yaml`): which spec, data, batch, optimizer, schedule, parallel
//! layout, checkpointing and logging. Parsed like specs — unknown fields rejected, every problem
//! located at file:line:column — and the spec they name is loaded relative to the recipe.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Problem, ProblemKind, ProblemSet, SpecError};
use crate::locate::{locate, parse_path};
use crate::types::{Dtype, Spec};
use crate::validate::Rule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The model spec, relative to this file.
    pub spec: PathBuf,
    /// Planned optimizer steps: the schedule's horizon and the default stop step.
    pub steps: u64,
    #[serde(default = "one")]
    pub seed: u64,
    pub data: Data,
    pub batch: Batch,
    pub optimizer: Optimizer,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub parallel: Parallel,
    #[serde(default)]
    pub checkpoint: Checkpointing,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub guard: Guard,
    /// What the backward makes again instead of keeping from the forward.
    #[serde(default, skip_serializing_if = "Recompute::is_none")]
    pub recompute: Recompute,
    /// DeepSeek-V3's FP8 caching (a spec with the FP8 recipe): the routed experts' inputs,
    /// SwiGLU inputs and outputs are kept for the backward as their E4M3 1×128 tiles, not in the
    /// compute dtype.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fp8_cache: bool,
}

/// Activation recomputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep every activation the backward reads.
    #[default]
    None,
    /// DeepSeek-V3's: the RMSNorm outputs, the MLA up-projections (q_b_proj, kv_b_proj) and the
    /// SwiGLU products are made again in each layer's backward — memory for a little compute.
    Selective,
}

impl Recompute {
    fn is_none(&self) -> bool {
        *self == Recompute::None
    }
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// `builtin` (the project's own docs and sources) or `shards` (token shard files).
    pub source: DataSource,
    /// Shard files (for `source: shards`), relative to this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<PathBuf>,
    /// Tokenizer for the built-in corpus.
    #[serde(default = "gpt2")]
    pub tokenizer: String,
    /// Share of the windows held out for validation.
    #[serde(default = "default_val")]
    pub validation_fraction: f64,
}

fn gpt2() -> String {
    "gpt2".into()
}
fn default_val() -> f64 {
    0.05
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    Builtin,
    Shards,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Sequences per micro-batch per data-parallel rank.
    pub micro_batch: u64,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub accumulation: u64,
    pub seq_len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Lion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    #[serde(default = "b1")]
    pub beta1: f64,
    #[serde(default = "b2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Also decay embedding and head matrices (norms and biases never decay).
    #[serde(default)]
    pub decay_embeddings: bool,
    /// Dtype of the moments (DeepSeek-V3 kept AdamW's moments in bf16).
    #[serde(default = "f32_dtype")]
    pub moments: Dtype,
    /// Global gradient-norm clip; 0 disables clipping.
    #[serde(default)]
    pub grad_clip: f64,
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.95
}
fn eps() -> f64 {
    1e-8
}
fn f32_dtype() -> Dtype {
    Dtype::F32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Linear warmup, then cosine decay to `min_lr_ratio · lr` at `steps`.
    #[default]
    Cosine,
    /// Warmup-stable-decay: linear warmup, constant, then linear decay over the last `decay_fraction`.
    Wsd,
    /// Linear warmup, then constant.
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub kind: ScheduleKind,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "min_ratio")]
    pub min_lr_ratio: f64,
    #[serde(default = "decay_fraction")]
    pub decay_fraction: f64,
}

fn min_ratio() -> f64 {
    0.1
}
fn decay_fraction() -> f64 {
    0.2
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr_ratio: min_ratio(),
            decay_fraction: decay_fraction(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallel {
    #[serde(default = "one")]
    pub tp: u64,
    #[serde(default = "one")]
    pub pp: u64,
    #[serde(default = "one")]
    pub ep: u64,
    #[serde(default = "one")]
    pub dp: u64,
    /// Memory of one GPU in GB, for the layout check (0 on CPU runs).
    #[serde(default)]
    pub gpu_memory_gb: f64,
    /// ZeRO stage over the data-parallel ranks: 1 shards the optimizer's moments (each rank
    /// updates its shard of the parameters and gathers the rest), 0 replicates them. Either gives
    /// the same numbers.
    #[serde(default = "one_u8", skip_serializing_if = "is_one_u8")]
    pub zero: u8,
    /// Seconds a collective waits for the other ranks before the job stops with a timeout naming
    /// the rank that waited and those that arrived.
    #[serde(default = "default_collective_timeout", skip_serializing_if = "is_default_collective_timeout")]
    pub collective_timeout_s: f64,
    /// Expert parallelism: the rows a rank's expert keeps at most, as a multiple of what a
    /// balanced routing gives it; rows past it are dropped (counted in the metrics). None (the
    /// default): every row, however the routing falls — exact, with buffers for the worst case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_capacity: Option<f64>,
}

fn one_u8() -> u8 {
    1
}

fn is_one_u8(x: &u8) -> bool {
    *x == 1
}

fn default_collective_timeout() -> f64 {
    600.0
}

fn is_default_collective_timeout(x: &f64) -> bool {
    *x == default_collective_timeout()
}

impl Parallel {
    /// Ranks of the job: `tp · pp · dp` (expert-parallel ranks are taken from the data- and
    /// tensor-parallel ones).
    pub fn world(&self) -> u64 {
        self.tp.saturating_mul(self.pp).saturating_mul(self.dp)
    }
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel {
            tp: 1,
            pp: 1,
            ep: 1,
            dp: 1,
            gpu_memory_gb: 0.0,
            zero: 1,
            collective_timeout_s: default_collective_timeout(),
            expert_capacity: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpointing {
    /// Write a checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Checkpoints kept (the oldest are deleted).
    #[serde(default = "three")]
    pub keep: u64,
}

fn three() -> u64 {
    3
}

impl Default for Checkpointing {
    fn default() -> Self {
        Checkpointing { every: 0, keep: 3 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// Log (and write metrics) every this many steps.
    #[serde(default = "one")]
    pub every: u64,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { every: 1 }
    }
}

/// What a run does about bad steps: a step whose loss or gradient norm is not finite (or, with
/// `spike_factor`, whose gradient norm spikes) changes nothing and is logged as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Skipped steps in a row after which the run stops (naming the first op whose output was not
    /// finite).
    #[serde(default = "three")]
    pub max_skipped: u64,
    /// Skip a step whose gradient norm exceeds this many times the median of the last
    /// `spike_window` applied steps' norms (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike_factor: Option<f64>,
    /// Applied steps the spike guard's median looks back over; it acts once it has this many.
    #[serde(default = "default_spike_window")]
    pub spike_window: u64,
}

fn default_spike_window() -> u64 {
    32
}

impl Default for Guard {
    fn default() -> Self {
        Guard { max_skipped: 3, spike_factor: None, spike_window: default_spike_window() }
    }
}

/// A loaded recipe: the config, its spec, and both texts (for the run's config hash).
#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    pub config: RunConfig,
    pub spec: Spec,
    pub spec_path: PathBuf,
    pub text: String,
    pub spec_text: String,
}

impl RunConfig {
    /// Tokens per optimizer step over all data-parallel ranks.
    pub fn tokens_per_step(&self) -> u64 {
        self.batch.micro_batch * self.batch.accumulation * self.parallel.dp * self.batch.seq_len
    }
    /// Tokens of the planned run.
    pub fn total_tokens(&self) -> u64 {
        self.steps * self.tokens_per_step()
    }
}

/// The most tokens a recipe may plan (10^18: a thousand times DeepSeek-V3's 14.8T, and far from
/// u64's overflow wherever the count is multiplied).
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000_000;
/// The most ranks a parallel layout may name.
pub const MAX_RANKS: u64 = 1 << 20;

/// Reads a recipe and the spec it names; problems are located like spec problems.
pub fn load_recipe(path: &Path) -> Result<Recipe, SpecError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: path.display().to_string(), source })?;
    let file = path.display().to_string();
    let config = parse_config(&file, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let spec_path = base.join(&config.spec);
    let spec_text = std::fs::read_to_string(&spec_path)
        .map_err(|source| SpecError::Io { path: spec_path.display().to_string(), source })?;
    let spec = crate::parse(&spec_path.display().to_string(), &spec_text)?;
    if config.batch.seq_len > spec.max_seq_len {
        return Err(range_problem(
            &file,
            &text,
            "batch.seq_len",
            format!("batch.seq_len = {} exceeds the spec's max_seq_len = {}", config.batch.seq_len, spec.max_seq_len),
            "train at most max_seq_len tokens",
        ));
    }
    Ok(Recipe { path: path.into(), config, spec, spec_path, text, spec_text })
}

/// A recipe value out of range, located at its field.
fn range_problem(file: &str, text: &str, field: &str, message: String, help: &str) -> SpecError {
    let (pos, _) = locate(text, &parse_path(field));
    SpecError::Problems(Box::new(ProblemSet::new(
        file,
        text,
        vec![Problem {
            kind: ProblemKind::Invalid(Rule::Range),
            path: field.into(),
            pos,
            message,
            help: Some(help.into()),
        }],
    )))
}

/// Parses and checks recipe text (`file` names it in errors), without reading the spec it names.
pub fn parse_config(file: &str, text: &str) -> Result<RunConfig, SpecError> {
    if let Some(pos) = crate::yaml::too_deep(text) {
        return Err(crate::parse::too_deep(file, text, pos));
    }
    let config: RunConfig = serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map_or(crate::locate::Pos::START, |l| crate::locate::Pos {
            line: l.line().max(1),
            column: l.column().max(1),
        });
        SpecError::Problems(Box::new(ProblemSet::new(
            file,
            text,
            vec![Problem {
                kind: ProblemKind::Shape,
                path: String::new(),
                pos,
                message: e.to_string(),
                help: Some("README.md lists every config field".into()),
            }],
        )))
    })?;
    let c = &config;
    let total = [c.batch.accumulation, c.parallel.dp, c.batch.seq_len, c.steps]
        .iter()
        .try_fold(c.batch.micro_batch, |acc, &x| acc.checked_mul(x))
        .filter(|&t| t <= MAX_TOKENS);
    let pl = &c.parallel;
    let layout = [pl.pp, pl.dp]
        .iter()
        .try_fold(pl.tp, |acc, &x| acc.checked_mul(x))
        .is_some_and(|n| (1..=MAX_RANKS).contains(&n));
    let experts = layout && pl.ep >= 1 && (pl.dp * pl.tp).is_multiple_of(pl.ep);
    let checks: [(&str, bool, String, &str); 19] = [
        ("steps", c.steps >= 1, format!("steps = {} must be at least 1", c.steps), "plan at least one step"),
        (
            "steps",
            total.is_some(),
            "steps × micro_batch × accumulation × dp × seq_len is over 10^18 tokens".into(),
            "a run of that many tokens cannot be counted; plan fewer steps or smaller batches",
        ),
        (
            "parallel",
            layout,
            format!("tp × pp × dp (the job's ranks) must lie in [1, {MAX_RANKS}]"),
            "each degree is at least 1, e.g. dp: 8",
        ),
        (
            "parallel.ep",
            experts,
            format!("parallel.ep = {} must be at least 1 and divide dp × tp = {}", pl.ep, pl.dp.saturating_mul(pl.tp)),
            "expert-parallel ranks are taken from the data- and tensor-parallel ranks, as DeepSeek-V3 does",
        ),
        (
            "parallel.zero",
            pl.zero <= 1,
            format!("parallel.zero = {} must be 0 or 1", pl.zero),
            "1 (ZeRO-1) shards the optimizer state over the data-parallel ranks, 0 replicates it",
        ),
        (
            "parallel.expert_capacity",
            pl.expert_capacity.is_none_or(|f| f.is_finite() && (1.0..=1e6).contains(&f)),
            "parallel.expert_capacity must lie in [1, 10^6]".into(),
            "e.g. 1.25: each expert keeps up to 1.25 times a balanced share of the rows; leave it out to drop none",
        ),
        (
            "parallel.collective_timeout_s",
            pl.collective_timeout_s.is_finite() && (0.001..=86_400.0).contains(&pl.collective_timeout_s),
            "parallel.collective_timeout_s must lie in [0.001, 86400] seconds".into(),
            "e.g. 600",
        ),
        ("batch.micro_batch", c.batch.micro_batch >= 1, "batch.micro_batch must be at least 1".into(), "e.g. 8"),
        (
            "batch.accumulation",
            c.batch.accumulation >= 1,
            "batch.accumulation must be at least 1".into(),
            "1 means no accumulation",
        ),
        (
            "batch.seq_len",
            c.batch.seq_len >= 2,
            "batch.seq_len must be at least 2".into(),
            "next-token prediction needs two tokens",
        ),
        (
            "optimizer.lr",
            c.optimizer.lr.is_finite() && c.optimizer.lr > 0.0,
            format!("optimizer.lr = {} must be positive", c.optimizer.lr),
            "e.g. 3.0e-4",
        ),
        (
            "optimizer.beta1",
            (0.0..1.0).contains(&c.optimizer.beta1) && (0.0..1.0).contains(&c.optimizer.beta2),
            "optimizer betas must lie in [0, 1)".into(),
            "AdamW: 0.9 and 0.95",
        ),
        (
            "optimizer.weight_decay",
            c.optimizer.weight_decay >= 0.0 && c.optimizer.grad_clip >= 0.0,
            "weight_decay and grad_clip must not be negative".into(),
            "0 disables either",
        ),
        (
            "schedule.min_lr_ratio",
            (0.0..=1.0).contains(&c.schedule.min_lr_ratio) && (0.0..=1.0).contains(&c.schedule.decay_fraction),
            "schedule ratios must lie in [0, 1]".into(),
            "e.g. min_lr_ratio 0.1",
        ),
        (
            "data.validation_fraction",
            (0.0..0.5).contains(&c.data.validation_fraction),
            "data.validation_fraction must lie in [0, 0.5)".into(),
            "e.g. 0.05",
        ),
        (
            "data.shards",
            c.data.source == DataSource::Builtin || !c.data.shards.is_empty(),
            "source: shards needs a list of shard files".into(),
            "list the .bin files `dsv3c data prepare` wrote",
        ),
        (
            "guard.max_skipped",
            c.guard.max_skipped >= 1,
            "guard.max_skipped must be at least 1".into(),
            "the default, 3, stops after three bad steps in a row",
        ),
        (
            "guard.spike_factor",
            c.guard.spike_factor.is_none_or(|k| k.is_finite() && k > 1.0),
            "guard.spike_factor must be a finite number above 1".into(),
            "e.g. 5: skip a step whose gradient norm is over 5x the running median",
        ),
        (
            "guard.spike_window",
            (1..=10_000).contains(&c.guard.spike_window),
            "guard.spike_window must lie in [1, 10000]".into(),
            "e.g. 32 steps",
        ),
    ];
    for (p, ok, message, help) in checks {
        if !ok {
            return Err(range_problem(file, text, p, message, help));
        }
    }
    Ok(config)
}

/// Is this YAML text a run recipe (it names a `spec:`) rather than a model spec?
pub fn is_recipe(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("spec:"))
}
