//! `dsv3c eval --hf DIR --tokens FILE [--json] [--dump-grads OUT]`: loss and gradients of a
//! Hugging Face DeepseekV3 checkpoint, forward and backward in f32 on the CPU.

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_runtime::program::ParamGroup;
use miette::{miette, IntoDiagnostic, Result, WrapErr};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face checkpoint folder: config.json and model.safetensors (or a sharded index).
    #[arg(long)]
    pub hf: PathBuf,
    /// A JSON array of equal-length arrays of token ids.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Print `{"loss": .., "tokens": ..}` as the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Write d loss / d parameter for every trainable parameter (safetensors, HF names).
    #[arg(long)]
    pub dump_grads: Option<PathBuf>,
}

/// Reads the token batches: a non-empty JSON array of equal-length, non-empty arrays of ids
/// below `vocab`.
fn read_tokens(path: &std::path::Path, vocab: u64) -> Result<(usize, usize, Vec<f32>)> {
    let text =
        std::fs::read_to_string(path).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(&text)
        .map_err(|e| miette!("{}: expected a JSON array of arrays of token ids: {e}", path.display()))?;
    let seq = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || seq == 0 {
        return Err(miette!("{}: no tokens", path.display()));
    }
    let mut flat = Vec::with_capacity(rows.len() * seq);
    for (b, row) in rows.iter().enumerate() {
        if row.len() != seq {
            return Err(miette!(
                "{}: sequence {b} has {} tokens, sequence 0 has {seq}; all must be equal",
                path.display(),
                row.len()
            ));
        }
        for (i, v) in row.iter().enumerate() {
            match v.as_u64() {
                Some(t) if t < vocab => flat.push(t as f32),
                _ => return Err(miette!("{}: token [{b}][{i}] = {v} is not an id in 0..{vocab}", path.display())),
            }
        }
    }
    Ok((rows.len(), seq, flat))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let config_path = a.hf.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", config_path.display()))?;
    let mut spec = dsv3c_spec::hf::import(&text, "eval").map_err(|e| miette!("{}: {e}", config_path.display()))?;
    let tensors = dsv3c_runtime::checkpoint::read_dir(&a.hf).map_err(|e| miette!("{e}"))?;
    // Evaluation measures the language-model loss: no balance term; MTP only if its weights exist.
    if let Some(m) = spec.moe.as_mut() {
        m.seq_aux_alpha = 0.0;
    }
    let mtp_prefix = format!("model.layers.{}.", spec.n_layers);
    if !tensors.keys().any(|k| k.starts_with(&mtp_prefix)) {
        spec.mtp = None;
    }
    spec.precision = Default::default();
    let violations = dsv3c_spec::validate::validate(&spec);
    if let Some(v) = violations.first() {
        return Err(miette!("{}: {} ({})", config_path.display(), v.message, v.help));
    }
    let (batch, seq, tokens) = read_tokens(&a.tokens, spec.vocab_size)?;
    let program = dsv3c_codegen::compile(&spec, batch, seq).map_err(|e| miette!("{e}"))?;
    let mut cpu = dsv3c_runtime::cpu::Cpu::new(&program);
    let unused = dsv3c_runtime::checkpoint::load_params(&program, &tensors, &mut cpu.params)
        .map_err(|e| miette!("{}: {e}", a.hf.display()))?;
    for name in unused {
        eprintln!("warning: checkpoint tensor `{name}` is not part of the model and was ignored");
    }
    cpu.write(program.io.tokens, &tokens);
    cpu.run(&program, &program.forward);
    cpu.run(&program, &program.backward);
    let loss = cpu.read(program.io.main_loss)[0] as f64;
    let mtp: Vec<f64> = program.io.mtp_losses.iter().map(|s| cpu.read(*s)[0] as f64).collect();

    if let Some(out) = &a.dump_grads {
        let grads: Vec<(String, Vec<usize>, Vec<f32>)> = program
            .params
            .iter()
            .filter(|p| p.group != ParamGroup::Frozen)
            .map(|p| (p.name.clone(), p.shape.clone(), cpu.grads[p.offset..p.offset + p.len()].to_vec()))
            .collect();
        dsv3c_runtime::checkpoint::write_file(out, &grads).map_err(|e| miette!("{e}"))?;
    }
    let n = batch * seq;
    if a.json {
        let mut v = serde_json::json!({ "loss": loss, "tokens": n });
        if !mtp.is_empty() {
            v["mtp_losses"] = serde_json::json!(mtp);
        }
        println!("{v}");
    } else {
        println!("loss {loss:.6} | perplexity {:.3} | tokens {n} ({batch} x {seq})", loss.exp());
        for (k, l) in mtp.iter().enumerate() {
            println!("mtp {} loss {l:.6}", k + 1);
        }
    }
    Ok(ExitCode::SUCCESS)
}
