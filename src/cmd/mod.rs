//! Subcommands, and the helpers they share (loading specs, writing outputs).

pub mod bench;
pub mod bench_kernels;
pub mod chinchilla;
pub mod compile;
pub mod data;
pub mod device;
pub mod eval;
pub mod generate;
pub mod hf;
pub mod inspect;
pub mod plot;
pub mod select;
pub mod sim;
pub mod train;

use std::path::Path;

use dsv3c_spec::memory::RunShape;
use dsv3c_spec::types::Dtype;
use miette::{IntoDiagnostic, Result, WrapErr};

/// A progress bar on stderr of `len` items (`what`: "kernels compiled"), or none when stderr is not
/// a terminal.
pub fn progress_bar(len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new(len);
        pb.set_style(
            indicatif::ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} | {{elapsed}}"))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    })
}

/// What a training checkpoint folder says it was trained from: its spec (with the spec file's path
/// and text) and its run recipe.
pub struct CheckpointRecipe {
    pub spec: dsv3c_spec::Spec,
    pub spec_path: std::path::PathBuf,
    pub spec_text: String,
    pub config: dsv3c_spec::config::RunConfig,
}

/// Reads `dir/spec.yaml` and `dir/config.yaml` of a training checkpoint.
pub fn checkpoint_recipe(dir: &Path) -> Result<CheckpointRecipe> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).into_diagnostic().wrap_err_with(|| format!("cannot read {}", p.display()))
    };
    let spec_path = dir.join("spec.yaml");
    let spec_text = read(&spec_path)?;
    let spec = dsv3c_spec::parse(&spec_path.display().to_string(), &spec_text).map_err(miette::Report::new)?;
    let config_path = dir.join("config.yaml");
    let config = dsv3c_spec::config::parse_config(&config_path.display().to_string(), &read(&config_path)?)
        .map_err(miette::Report::new)?;
    Ok(CheckpointRecipe { spec, spec_path, spec_text, config })
}

/// Loads and validates a spec, as a renderable diagnostic on failure.
pub fn load_spec(path: &Path) -> Result<dsv3c_spec::Spec> {
    dsv3c_spec::load(path).map_err(miette::Report::new)
}

/// Writes `text` to `out`, or to stdout when `out` is None.
pub fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).into_diagnostic().wrap_err_with(|| format!("cannot write {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Flags that shape a training run's memory, shared by `inspect` and `select`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunFlags {
    /// Sequences per micro-batch per data-parallel rank.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: u64,
    /// Dtype of AdamW's moments (DeepSeek-V3 trained with bf16).
    #[arg(long, value_enum, default_value = "f32")]
    pub moments: MomentDtype,
    /// ZeRO stage: 0, or 1 to shard master weights and moments over data-parallel ranks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: u8,
    /// With expert parallelism: each expert keeps at most this many times a balanced share of the
    /// rows (recipe `parallel.expert_capacity`) [default: every row, the worst routing's buffers].
    #[arg(long, value_parser = expert_capacity)]
    pub expert_capacity: Option<f64>,
    /// Selective recomputation (recipe `recompute: selective`): norms, MLA up-projections and
    /// SwiGLU products made again in the backward instead of kept.
    #[arg(long)]
    pub recompute: bool,
    /// FP8 caching (recipe `fp8_cache: true`): the routed experts' inputs, SwiGLU inputs and
    /// outputs kept for the backward in E4M3.
    #[arg(long)]
    pub fp8_cache: bool,
}

/// An expert capacity factor: a number in [1, 10^6] (what the recipe's `parallel.expert_capacity` admits).
pub fn expert_capacity(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && (1.0..=1e6).contains(&f) => Ok(f),
        _ => Err(format!("`{text}` is not a capacity factor in [1, 10^6] (e.g. 1.25)")),
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum MomentDtype {
    F32,
    Bf16,
}

impl RunFlags {
    pub fn shape(&self, seq_len: u64) -> RunShape {
        RunShape {
            micro_batch: self.micro_batch,
            seq_len,
            moments: match self.moments {
                MomentDtype::F32 => Dtype::F32,
                MomentDtype::Bf16 => Dtype::Bf16,
            },
            zero: self.zero,
            expert_capacity: self.expert_capacity,
            recompute: self.recompute,
            fp8_cache: self.fp8_cache,
        }
    }
}
