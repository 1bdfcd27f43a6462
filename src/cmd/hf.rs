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
    /// The model spec (YAML).
    pub spec: PathBuf,
    /// Where to write config.json [default: stdout].
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.config)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", a.config.display()))?;
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
    let spec = hf::import(&text, name.trim_start_matches('.')).map_err(|e| miette!("{}: {e}", a.config.display()))?;
    let yaml = format!("# Imported from {} by dsv3c import-hf.\n{}", a.config.display(), spec.to_yaml());
    // The imported spec must satisfy every rule, like a hand-written one.
    dsv3c_spec::parse(&a.out.as_ref().map_or("<stdout>".into(), |p| p.display().to_string()), &yaml)
        .map_err(miette::Report::new)?;
    write_out(a.out.as_deref(), &yaml)?;
    Ok(ExitCode::SUCCESS)
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let text = hf::export_text(&spec).map_err(|e| miette!("{}: {e}", a.spec.display()))?;
    write_out(a.out.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}
