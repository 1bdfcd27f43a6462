//! `dsv3c import-hf config.json [-o spec.yaml] [--name N]` and `dsv3c export-hf SPEC [-o config.json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_spec::hf;
use miette::{miette, IntoDiagnostic, Result, WrapErr};

use super::{load_spec, write_out};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// A Hugging Face DeepseekV3 (or V2) config.json.
    pub config: PathBuf,
    /// Where to write the spec [default: stdout].
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// The spec's name [default: the output file's stem, or the config's folder name].
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A model spec (YAML), or a training checkpoint folder (runs/NAME/checkpoints/step-NNNNNN).
    pub spec: PathBuf,
    /// Where to write config.json [default: stdout]; for a checkpoint, the output folder
    /// (config.json and model.safetensors, loadable by transformers).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    let stem = |p: &std::path::Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = a
        .name
        .clone()
        .or_else(|| a.out.as_deref().and_then(stem))
        .or_else(|| {
            a.config.canonicalize().ok()?.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "imported".into());
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let spec = hf::load(&a.config, name.trim_start_matches('.')).map_err(|e| miette!("{e}"))?;
    let yaml = format!("# Imported from {} by dsv3c import-hf.\n{}", a.config.display(), spec.to_yaml());
    // The imported spec must satisfy every rule, like a hand-written one.
    dsv3c_spec::parse(&a.out.as_ref().map_or("<stdout>".into(), |p| p.display().to_string()), &yaml)
        .map_err(miette::Report::new)?;
    write_out(a.out.as_deref(), &yaml)?;
    Ok(ExitCode::SUCCESS)
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    if a.spec.is_dir() {
        return export_checkpoint(&a.spec, a.out.as_deref());
    }
    let spec = load_spec(&a.spec)?;
    let text = hf::export_text(&spec).map_err(|e| miette!("{}: {e}", a.spec.display()))?;
    write_out(a.out.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}

/// A training checkpoint as a Hugging Face folder: config.json and model.safetensors.
fn export_checkpoint(dir: &std::path::Path, out: Option<&std::path::Path>) -> Result<ExitCode> {
    let out = out.ok_or_else(|| miette!("exporting a checkpoint needs -o OUT_DIR"))?;
    let loaded = dsv3c_runtime::train::checkpoint::load(dir).map_err(|e| miette!("{e}"))?;
    let spec = load_spec(&dir.join("spec.yaml"))?;
    let config = hf::export_text(&spec).map_err(|e| miette!("{}: {e}", dir.display()))?;
    std::fs::create_dir_all(out).into_diagnostic().wrap_err_with(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("config.json"), config).into_diagnostic()?;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        loaded.model.into_iter().map(|(k, t)| (k, t.shape, t.data)).collect();
    dsv3c_runtime::checkpoint::write_file(&out.join("model.safetensors"), &tensors).map_err(|e| miette!("{e}"))?;
    eprintln!("wrote {} (step {})", out.display(), loaded.run.step);
    Ok(ExitCode::SUCCESS)
}

/// A Hugging Face checkpoint folder read for evaluation or generation: its config as a spec (the
/// MTP module kept only when its weights are there; f32 throughout, whatever the stored dtype) and
/// every tensor by name.
pub struct HfCheckpoint {
    pub spec: dsv3c_spec::Spec,
    pub tensors: std::collections::BTreeMap<String, dsv3c_runtime::checkpoint::Tensor>,
    pub config_path: std::path::PathBuf,
}

/// Reads `dir/config.json` and the weights beside it (`name` names the spec).
pub fn read_checkpoint(dir: &std::path::Path, name: &str) -> Result<HfCheckpoint> {
    let config_path = dir.join("config.json");
    let mut spec = dsv3c_spec::hf::load(&config_path, name).map_err(|e| miette!("{e}"))?;
    let tensors = dsv3c_runtime::checkpoint::read_dir(dir).map_err(|e| miette!("{e}"))?;
    let mtp_prefix = format!("model.layers.{}.", spec.n_layers);
    if !tensors.keys().any(|k| k.starts_with(&mtp_prefix)) {
        spec.mtp = None;
    }
    // The weights are read as f32 (FP8 ones dequantized): the spec computes in f32.
    spec.precision = Default::default();
    let spec = dsv3c_spec::hf::checked(&config_path, spec).map_err(|e| miette!("{e}"))?;
    Ok(HfCheckpoint { spec, tensors, config_path })
}
