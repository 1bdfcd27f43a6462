//! `dsv3c chinchilla SPEC --tokens N [--strict] [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_spec::chinchilla::chinchilla;
use dsv3c_spec::inspect::{grouped, human_count};
use miette::{miette, Result};

use super::load_spec;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model spec (YAML). Run recipes (configs/) come with `dsv3c train`.
    pub spec: PathBuf,
    /// Training tokens, e.g. 20e9 or 20000000000.
    #[arg(long, value_parser = parse_tokens)]
    pub tokens: u64,
    /// Exit non-zero when outside the band.
    #[arg(long)]
    pub strict: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_tokens(s: &str) -> Result<u64, String> {
    let v: f64 = s.replace('_', "").parse().map_err(|_| format!("`{s}` is not a number of tokens"))?;
    if !(1.0..1e20).contains(&v) {
        return Err(format!("`{s}` is not a positive number of tokens below 1e20"));
    }
    Ok(v as u64)
}

pub fn run(a: Args) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let c = chinchilla(&spec, a.tokens);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c).map_err(|e| miette!("{e}"))?);
    } else {
        println!("spec {}: {} active parameters", c.spec, grouped(c.active_params));
        println!("tokens {} = {:.1} tokens per active parameter", human_count(c.tokens as f64), c.tokens_per_param);
        println!(
            "Chinchilla band {}–{} tokens/param = {} – {} tokens: {}",
            c.band.0,
            c.band.1,
            human_count(c.tokens_low as f64),
            human_count(c.tokens_high as f64),
            if c.within {
                "within"
            } else if c.tokens_per_param < c.band.0 {
                "BELOW (under-trained)"
            } else {
                "ABOVE (over-trained for its size)"
            }
        );
    }
    Ok(if a.strict && !c.within { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
