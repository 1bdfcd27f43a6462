//! `dsv3c eval --hf DIR --tokens FILE [--json] [--dump-grads OUT]`: loss and gradients of a
//! Hugging Face DeepseekV3 checkpoint, forward and backward in f32 on the CPU; and
//! `dsv3c eval --checkpoint DIR [--data SHARDS...] [--json]`: validation loss and perplexity of
//! a training checkpoint.

use dsv3c_runtime::program::Backend;
use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_runtime::program::ParamGroup;
use miette::{miette, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face checkpoint folder: config.json and model.safetensors (or a sharded index).
    #[arg(long, required_unless_present = "checkpoint", conflicts_with = "checkpoint", requires = "tokens")]
    pub hf: Option<PathBuf>,
    /// A JSON array of equal-length arrays of token ids (with --hf).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// A training checkpoint folder (runs/NAME/checkpoints/step-NNNNNN).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Token shards to evaluate on (with --checkpoint) [default: the run's validation split].
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
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
    let rows = dsv3c_runtime::data::token_json::read(path).map_err(|e| miette!("{e}"))?;
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
        for (i, &t) in row.iter().enumerate() {
            if u64::from(t) >= vocab {
                return Err(miette!("{}: token [{b}][{i}] = {t} is not an id in 0..{vocab}", path.display()));
            }
            flat.push(t as f32);
        }
    }
    Ok((rows.len(), seq, flat))
}

pub fn run(a: Args) -> Result<ExitCode> {
    match (&a.hf, &a.tokens, &a.checkpoint) {
        (Some(hf), Some(tokens), None) => eval_hf(hf, tokens, a.json, a.dump_grads.as_deref()),
        (None, _, Some(ckpt)) => eval_checkpoint(ckpt, &a.data, a.json),
        _ => Err(miette!("give --hf DIR with --tokens FILE, or --checkpoint DIR")),
    }
}

fn eval_checkpoint(dir: &std::path::Path, data: &[PathBuf], json: bool) -> Result<ExitCode> {
    let loaded = dsv3c_runtime::train::checkpoint::load(dir).map_err(|e| miette!("{e}"))?;
    let super::CheckpointRecipe { spec, spec_path, spec_text, config } = super::checkpoint_recipe(dir)?;
    let (micro, seq) = (config.batch.micro_batch as usize, config.batch.seq_len as usize);
    let (tokens, windows) = if data.is_empty() {
        let recipe = dsv3c_spec::config::Recipe {
            path: dir.join("config.yaml"),
            config: config.clone(),
            spec: spec.clone(),
            spec_path,
            text: String::new(),
            spec_text: spec_text.clone(),
        };
        let tokens = super::train::corpus_tokens(&recipe)?;
        let (_, val) = dsv3c_runtime::data::loader::split(tokens.len(), seq, config.data.validation_fraction);
        (tokens, val)
    } else {
        let mut tokens = Vec::new();
        for p in data {
            tokens.extend(dsv3c_runtime::data::shard::read_within(p, spec.vocab_size).map_err(|e| miette!("{e}"))?);
        }
        let n = tokens.len() / seq;
        (tokens, (0..n).collect())
    };
    if let Some(bad) = tokens.iter().find(|&&t| t as u64 >= spec.vocab_size) {
        return Err(miette!("the data holds token id {bad}, outside the spec's vocab_size {}", spec.vocab_size));
    }
    let batches: Vec<&[usize]> = windows.chunks_exact(micro).collect();
    if batches.is_empty() {
        return Err(miette!("too little data: {} windows of {seq} tokens for a batch of {micro}", windows.len()));
    }
    let program = dsv3c_codegen::compile(&spec, micro, seq).map_err(|e| miette!("{e}"))?;
    let mut cpu = dsv3c_runtime::cpu::Cpu::new(&program);
    dsv3c_runtime::checkpoint::load_params(&program, &loaded.model, &mut cpu.params)
        .map_err(|e| miette!("{}: {e}", dir.display()))?;
    // The weights' compute copy (bf16 specs) from the loaded parameters.
    cpu.run(&program, &program.start).map_err(|e| miette!("{e}"))?;
    let mut sum = 0.0;
    for ws in &batches {
        let batch: Vec<f32> =
            ws.iter().flat_map(|&w| tokens[w * seq..(w + 1) * seq].iter().map(|&t| t as f32)).collect();
        cpu.write(program.io.tokens, &batch).map_err(|e| miette!("{e}"))?;
        cpu.run(&program, &program.forward).map_err(|e| miette!("{e}"))?;
        sum += cpu.read(program.io.main_loss)[0] as f64;
    }
    let loss = sum / batches.len() as f64;
    let n = batches.len() * micro * seq;
    if json {
        println!(
            "{}",
            serde_json::json!({ "loss": loss, "perplexity": loss.exp(), "tokens": n, "step": loaded.run.step })
        );
    } else {
        println!("step {} | validation loss {loss:.4} | perplexity {:.2} | tokens {n}", loaded.run.step, loss.exp());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_hf(
    hf: &std::path::Path,
    tokens_path: &std::path::Path,
    json: bool,
    dump_grads: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let super::hf::HfCheckpoint { mut spec, tensors, config_path } = super::hf::read_checkpoint(hf, "eval")?;
    // Evaluation measures the language-model loss: no balance term.
    if let Some(m) = spec.moe.as_mut() {
        m.seq_aux_alpha = 0.0;
    }
    let violations = dsv3c_spec::validate::validate(&spec);
    if let Some(v) = violations.first() {
        return Err(miette!("{}: {} ({})", config_path.display(), v.message, v.help));
    }
    let (batch, seq, tokens) = read_tokens(tokens_path, spec.vocab_size)?;
    let program = dsv3c_codegen::compile(&spec, batch, seq).map_err(|e| miette!("{e}"))?;
    let mut cpu = dsv3c_runtime::cpu::Cpu::new(&program);
    let unused = dsv3c_runtime::checkpoint::load_params(&program, &tensors, &mut cpu.params)
        .map_err(|e| miette!("{}: {e}", hf.display()))?;
    for name in unused {
        eprintln!("warning: checkpoint tensor `{name}` is not part of the model and was ignored");
    }
    cpu.gradients(&program, &tokens).map_err(|e| miette!("{e}"))?;
    let loss = cpu.read(program.io.main_loss)[0] as f64;
    let mtp: Vec<f64> = program.io.mtp_losses.iter().map(|s| cpu.read(*s)[0] as f64).collect();

    if let Some(out) = dump_grads {
        let grads: Vec<(String, Vec<usize>, Vec<f32>)> = program
            .params
            .iter()
            .filter(|p| p.group != ParamGroup::Frozen)
            .map(|p| (p.name.clone(), p.shape.clone(), cpu.grads[p.offset..p.offset + p.len()].to_vec()))
            .collect();
        dsv3c_runtime::checkpoint::write_file(out, &grads).map_err(|e| miette!("{e}"))?;
    }
    let n = batch * seq;
    if json {
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
