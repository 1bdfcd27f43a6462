//! `dsv3c chinchilla SPEC --tokens N [--strict] [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_spec::chinchilla::chinchilla;
use dsv3c_spec::inspect::{grouped, human_count};
use miette::{miette, Result};

use super::load_spec;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run recipe (configs/*.yaml), or a model spec with --tokens.
    pub config: PathBuf,
    /// Training tokens, e.g. 20e9 [default: the recipe's steps × tokens per step].
    #[arg(long, value_parser = parse_tokens)]
    pub tokens: Option<u64>,
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
    let path = super::train::resolve(&a.config);
    let text = std::fs::read_to_string(&path).map_err(|e| miette!("cannot read {}: {e}", path.display()))?;
    // A recipe brings its token budget and its layout; a spec needs --tokens.
    let (spec, tokens, memory) = if dsv3c_spec::config::is_recipe(&text) {
        let r = dsv3c_spec::config::load_recipe(&path).map_err(miette::Report::new)?;
        let c = &r.config;
        let p = &c.parallel;
        let memory = (p.gpu_memory_gb > 0.0).then(|| {
            let layout = dsv3c_spec::memory::Layout { tp: p.tp, pp: p.pp, ep: p.ep, dp: p.dp };
            let run = dsv3c_spec::memory::RunShape {
                micro_batch: c.batch.micro_batch,
                seq_len: c.batch.seq_len,
                moments: c.optimizer.moments,
                zero: p.zero,
                expert_capacity: p.expert_capacity,
                recompute: c.recompute == dsv3c_spec::config::Recompute::Selective,
                fp8_cache: c.fp8_cache,
            };
            (
                layout,
                layout.check(&r.spec, layout.gpus()),
                dsv3c_spec::memory::memory(&r.spec, layout, run),
                p.gpu_memory_gb,
            )
        });
        (r.spec.clone(), a.tokens.unwrap_or(c.total_tokens()), memory)
    } else {
        let tokens = a
            .tokens
            .ok_or_else(|| miette!("{} is a model spec: pass --tokens (or give a run recipe)", path.display()))?;
        (load_spec(&path)?, tokens, None)
    };
    let c = chinchilla(&spec, tokens);
    let fits = memory.as_ref().is_none_or(|(_, ok, m, gb)| ok.is_ok() && m.total <= gb * 1e9);
    if a.json {
        let mut v = serde_json::to_value(&c).map_err(|e| miette!("{e}"))?;
        if let Some((layout, ok, m, gb)) = &memory {
            v["memory"] = serde_json::json!({ "layout": layout, "valid": ok.is_ok(), "total": m.total, "gpu_memory_gb": gb, "fits": fits });
        }
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| miette!("{e}"))?);
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
        if let Some((layout, ok, m, gb)) = &memory {
            match ok {
                Ok(()) => println!(
                    "layout {layout} on {} GPUs: {} per GPU of {gb} GB: {}",
                    layout.gpus(),
                    dsv3c_spec::inspect::human_bytes(m.total),
                    if fits { "fits" } else { "does NOT fit" }
                ),
                Err(e) => println!("layout {layout}: {e}"),
            }
        }
    }
    Ok(if a.strict && !(c.within && fits) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
