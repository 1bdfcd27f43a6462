//! `dsv3c generate (--checkpoint DIR | --hf DIR) (--prompt TEXT | --prompt-tokens FILE)`: samples
//! from a model through its compiled decode programs, on any `--device` — a prefill of the prompts, then
//! one-token steps over MLA's latent cache (absorbed attention), or two-token steps that verify the
//! MTP module's draft (`--speculative mtp`). Tokens stream to stdout as they are chosen; `--json`
//! ends with one line holding the tokens, text, log-probabilities, cache bytes and speeds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dsv3c_codegen::{compile_decode, DecodeShape};
use dsv3c_runtime::data::tokenizer::Tokenizer;
use dsv3c_runtime::generate::{cache_needed, check_prompts, generate, sampler::Sampling, Programs};
use dsv3c_runtime::program::{Backend, Space};
use dsv3c_spec::types::KvCacheDtype;
use miette::{miette, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheArg {
    F32,
    Bf16,
    Fp8,
}

impl From<CacheArg> for KvCacheDtype {
    fn from(c: CacheArg) -> KvCacheDtype {
        match c {
            CacheArg::F32 => KvCacheDtype::F32,
            CacheArg::Bf16 => KvCacheDtype::Bf16,
            CacheArg::Fp8 => KvCacheDtype::Fp8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Speculative {
    /// The model's first MTP module drafts the next token; the main model verifies it.
    Mtp,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training checkpoint folder (runs/NAME/checkpoints/step-NNNNNN).
    #[arg(long, required_unless_present = "hf", conflicts_with = "hf")]
    pub checkpoint: Option<PathBuf>,
    /// A Hugging Face checkpoint folder: config.json, model.safetensors (or a sharded index) and,
    /// for text, tokenizer.json.
    #[arg(long)]
    pub hf: Option<PathBuf>,
    /// The prompt, as text (through the checkpoint's tokenizer).
    #[arg(long, required_unless_present = "prompt_tokens", conflicts_with = "prompt_tokens")]
    pub prompt: Option<String>,
    /// A JSON array of token-id arrays: a batch of prompts of any lengths.
    #[arg(long)]
    pub prompt_tokens: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0: greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample from the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample from the smallest most-likely set of probability P (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The latent cache's storage: f32, bf16, or fp8 (E4M3 latent with a scale per 128 values, bf16
    /// rope part) [default: f32 for a model computed in f32 (every Hugging Face checkpoint), else the
    /// spec's precision.kv_cache].
    #[arg(long, value_enum)]
    pub kv_cache: Option<CacheArg>,
    /// Speculative decoding with the model's MTP module.
    #[arg(long, value_enum)]
    pub speculative: Option<Speculative>,
    /// Generate all --max-new-tokens even past an end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// What runs the programs: the CPU reference (cpu), the GPU (cuda), the PTX emulator (sim: slow,
    /// sanitized), or the GPU when one answers and else the CPU (auto).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: super::device::Device,
    /// End with one JSON line: tokens, text, logprobs, kv_cache_bytes, speeds, MTP acceptance.
    #[arg(long)]
    pub json: bool,
}

/// A model to sample from: its spec, weights by name, and tokenizer when one is known.
struct Model {
    spec: dsv3c_spec::Spec,
    tensors: std::collections::BTreeMap<String, dsv3c_runtime::checkpoint::Tensor>,
    tokenizer: Option<Tokenizer>,
    /// End-of-sequence ids: a sequence stops after one.
    eos: Vec<u32>,
}

/// `eos_token_id` of a Hugging Face config (an id or a list of ids), if it has one.
fn eos_ids(path: &Path) -> Option<Vec<u32>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    match &v["eos_token_id"] {
        serde_json::Value::Number(n) => Some(vec![n.as_u64()? as u32]),
        serde_json::Value::Array(a) => Some(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect()),
        _ => None,
    }
}

fn from_hf(dir: &Path) -> Result<Model> {
    let super::hf::HfCheckpoint { spec, tensors, config_path } = super::hf::read_checkpoint(dir, "generate")?;
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(Tokenizer::by_name("tokenizer.json", dir).map_err(|e| miette!("{}: {e}", dir.display()))?)
    } else {
        None
    };
    // transformers' `generate` stops where the generation config (else the model config) says.
    let eos = eos_ids(&dir.join("generation_config.json")).or_else(|| eos_ids(&config_path)).unwrap_or_default();
    Ok(Model { spec, tensors, tokenizer, eos })
}

fn from_checkpoint(dir: &Path) -> Result<Model> {
    let loaded = dsv3c_runtime::train::checkpoint::load(dir).map_err(|e| miette!("{e}"))?;
    let super::CheckpointRecipe { spec, config, .. } = super::checkpoint_recipe(dir)?;
    let tokenizer = Tokenizer::by_name(&config.data.tokenizer, dir).ok();
    let eos = tokenizer.as_ref().and_then(Tokenizer::eot).into_iter().collect();
    Ok(Model { spec, tensors: loaded.model, tokenizer, eos })
}

/// The prompts: a JSON array of arrays of token ids, or the text through the tokenizer.
fn prompts(a: &Args, tokenizer: Option<&Tokenizer>) -> Result<Vec<Vec<u32>>> {
    if let Some(path) = &a.prompt_tokens {
        return dsv3c_runtime::data::token_json::read(path).map_err(|e| miette!("{e}"));
    }
    let text = a.prompt.as_deref().unwrap_or_default();
    let tok = tokenizer.ok_or_else(|| {
        miette!("no tokenizer is known for this checkpoint (none beside it, none in its recipe): give --prompt-tokens")
    })?;
    Ok(vec![tok.encode(text)])
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = match (&a.checkpoint, &a.hf) {
        (Some(dir), None) => from_checkpoint(dir)?,
        (None, Some(dir)) => from_hf(dir)?,
        _ => return Err(miette!("give --checkpoint DIR or --hf DIR")),
    };
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        return Err(miette!("--temperature must be 0 (greedy) or positive, got {}", a.temperature));
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err(miette!("--top-p must lie in (0, 1], got {}", a.top_p));
    }
    let spec = &model.spec;
    let prompts = prompts(&a, model.tokenizer.as_ref())?;
    check_prompts(&prompts, spec.vocab_size as usize).map_err(|e| miette!("{e}"))?;
    let speculative = a.speculative.is_some();
    if speculative && spec.mtp.is_none() {
        return Err(miette!("--speculative mtp needs a model with an MTP module; this one has none"));
    }
    let per = if speculative { 2 } else { 1 };
    let batch = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
    let cache_len = prompts.iter().map(|p| cache_needed(p.len(), a.max_new_tokens, per)).max().unwrap_or(1);
    if cache_len as u64 > spec.max_seq_len {
        return Err(miette!(
            "the longest prompt ({longest} tokens) and {} new tokens need a cache of {cache_len} positions, \
             more than the model's max_seq_len {}",
            a.max_new_tokens,
            spec.max_seq_len
        ));
    }
    // The cache keeps what the model computes: an f32 model's latents in f32 (a bf16 cache would
    // round them and part from an f32 or f64 reference's greedy tokens), else the spec's choice.
    let cache: KvCacheDtype = match a.kv_cache {
        Some(c) => c.into(),
        None if spec.precision.compute == dsv3c_spec::types::Dtype::F32 => KvCacheDtype::F32,
        None => spec.precision.kv_cache,
    };
    let shape =
        DecodeShape { batch, per_seq: longest, cache_len, cache, absorbed: false, draft: speculative, last_only: true };
    let opened = super::device::open(a.device)?;
    let prefill = compile_decode(spec, shape).map_err(|e| miette!("{e}"))?;
    let step = compile_decode(spec, DecodeShape { per_seq: per, absorbed: true, last_only: false, ..shape })
        .map_err(|e| miette!("{e}"))?;
    let mut params = vec![0.0f32; prefill.param_len];
    dsv3c_runtime::checkpoint::load_params(&prefill, &model.tensors, &mut params).map_err(|e| miette!("{e}"))?;
    let mut backend = opened.backend_for(&[&prefill, &step])?;
    backend.write(prefill.whole(Space::Param), &params).map_err(|e| miette!("{e}"))?;
    prefill.run(&prefill.start, &mut backend).map_err(|e| miette!("{e}"))?;

    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    let tok = model.tokenizer.as_ref();
    // One prompt streams as it goes (text when a tokenizer is known, else ids); a batch prints
    // each continuation when it is done.
    let mut shown = String::new();
    let mut so_far: Vec<u32> = Vec::new();
    let stdout = std::io::stdout();
    let on_token = |seq: usize, t: u32| {
        if batch != 1 || seq != 0 {
            return;
        }
        so_far.push(t);
        let mut out = stdout.lock();
        match tok {
            Some(tok) => {
                let text = tok.decode(&so_far);
                if let Some(new) = text.strip_prefix(shown.as_str()) {
                    let _ = write!(out, "{new}");
                    shown = text;
                }
            }
            None => {
                let _ = write!(out, "{t} ");
            }
        }
        let _ = out.flush();
    };
    let programs = Programs { prefill: &prefill, step: &step };
    let stop = if a.ignore_eos { &[][..] } else { &model.eos[..] };
    let out = generate(&mut backend, &programs, &prompts, a.max_new_tokens, &sampling, stop, on_token)
        .map_err(|e| miette!("{e}"))?;
    let texts: Option<Vec<String>> = tok.map(|t| out.tokens.iter().map(|ids| t.decode(ids)).collect());
    if batch == 1 {
        println!();
    } else {
        for (b, ids) in out.tokens.iter().enumerate() {
            match &texts {
                Some(t) => println!("[{b}] {}", t[b]),
                None => println!("[{b}] {}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")),
            }
        }
    }
    let kv_cache_bytes: usize =
        step.decode.as_ref().map_or(0, |d| d.caches[..spec.n_layers as usize].iter().map(|c| c.bytes()).sum());
    let acceptance = out.acceptance();
    let format = format!("{cache:?}").to_lowercase();
    eprintln!(
        "prefill {} tokens at {:.1} tokens/s | decode {} tokens in {} steps at {:.1} tokens/s | cache {} ({}){}",
        out.prefill_tokens,
        out.prefill_tokens_per_sec(),
        out.decode_tokens,
        out.decode_steps,
        out.decode_tokens_per_sec(),
        human_bytes(kv_cache_bytes),
        format,
        acceptance.map_or(String::new(), |r| format!(" | MTP acceptance {:.1}%", 100.0 * r)),
    );
    if a.json {
        let mut v = serde_json::json!({
            "tokens": out.tokens,
            "logprobs": out.logprobs,
            "kv_cache_bytes": kv_cache_bytes,
            "prefill_tokens_per_sec": out.prefill_tokens_per_sec(),
            "decode_tokens_per_sec": out.decode_tokens_per_sec(),
            "mtp_acceptance": acceptance,
        });
        if let Some(t) = texts {
            v["text"] = serde_json::json!(t);
        }
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
