//! dsv3c-data: `dsv3c data prepare` — the data pipeline a pretraining run needs before its first
//! step: cleaning, exact and MinHash near-duplicate removal, Gopher/C4 quality filters, optional
//! language identification, tokenization into the shards `dsv3c train` reads.
//!
//! Documents stream through in batches (bounded memory): each batch is cleaned, checked and
//! MinHashed in parallel, then deduplicated in input order against everything kept so far, so
//! the output is the same for the same input and seed, whatever the thread count.

pub mod clean;
pub mod config;
pub mod input;
pub mod minhash;
pub mod quality;
pub mod synth;

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use config::PrepareConfig;
use dsv3c_runtime::data::{shard, tokenizer::Tokenizer};
use input::{Doc, Malformed};

/// What a run of the pipeline did (written as `stats.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub documents_in: u64,
    pub malformed: u64,
    pub empty_after_cleaning: u64,
    pub exact_duplicates: u64,
    pub near_duplicates: u64,
    /// Documents filtered, per quality rule.
    pub filtered: BTreeMap<String, u64>,
    pub language_filtered: u64,
    pub documents_out: u64,
    pub train_tokens: u64,
    pub validation_tokens: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub shards: Vec<String>,
    /// MinHash LSH (bands, rows) used.
    pub lsh: (usize, usize),
    pub seconds: f64,
    /// The first few malformed inputs, for the report.
    pub malformed_examples: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("data recipe: `{field}` = {value}: {expected}")]
    Config { field: &'static str, value: String, expected: &'static str },
    #[error("malformed input at {location}: {reason} (strict mode)")]
    Malformed { location: String, reason: String },
    #[error("no input files under {0}")]
    NoInput(String),
    #[error("input {0} does not exist")]
    MissingInput(PathBuf),
    #[error(
        "no document survived: {documents_in} read, {malformed} malformed, {empty} empty after cleaning, \
         {duplicates} duplicates, {filtered} filtered (see {stats})"
    )]
    NothingKept { documents_in: u64, malformed: u64, empty: u64, duplicates: u64, filtered: u64, stats: PathBuf },
}

/// What happened to one document in the parallel phase.
enum Verdict {
    Empty,
    Filtered(&'static str),
    Language,
    Candidate { text: String, sig: Vec<u64>, tokens: Vec<u32> },
}

struct Checked {
    id: String,
    hash: u128,
    bytes: u64,
    verdict: Verdict,
}

fn content_hash(text: &str) -> u128 {
    let fnv = text.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3));
    let mut sip = std::hash::DefaultHasher::new();
    text.hash(&mut sip);
    ((fnv as u128) << 64) | sip.finish() as u128
}

/// Buffers tokens and writes `prefix-NNNNNN.bin` shards of `limit` tokens.
struct ShardWriter {
    dir: PathBuf,
    prefix: &'static str,
    limit: usize,
    buf: Vec<u32>,
    next: usize,
    total: u64,
    written: Vec<String>,
}

impl ShardWriter {
    fn push(&mut self, tokens: &[u32]) -> Result<(), PrepareError> {
        self.buf.extend_from_slice(tokens);
        self.total += tokens.len() as u64;
        while self.buf.len() >= self.limit {
            let rest = self.buf.split_off(self.limit);
            self.flush_full()?;
            self.buf = rest;
        }
        Ok(())
    }
    fn flush_full(&mut self) -> Result<(), PrepareError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let name = format!("{}-{:06}.bin", self.prefix, self.next);
        shard::write(&self.dir.join(&name), &self.buf)?;
        self.written.push(name);
        self.next += 1;
        self.buf.clear();
        Ok(())
    }
}

/// Runs the pipeline over `inputs`, writing into `out`.
pub fn prepare(
    inputs: &[PathBuf],
    out: &Path,
    cfg: &PrepareConfig,
    tokenizer_base: &Path,
    progress: &dyn Fn(&Stats),
) -> Result<Stats, PrepareError> {
    let started = std::time::Instant::now();
    cfg.check().map_err(|(field, value, expected)| PrepareError::Config { field, value, expected })?;
    if let Some(missing) = inputs.iter().find(|p| !p.exists()) {
        return Err(PrepareError::MissingInput(missing.clone()));
    }
    let files = input::files(inputs);
    if files.is_empty() {
        return Err(PrepareError::NoInput(
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        ));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrepareError::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let tokenizer =
        Tokenizer::by_name(&cfg.tokenizer, tokenizer_base).map_err(|e| PrepareError::Tokenizer(e.to_string()))?;
    let hasher = minhash::MinHasher::new(cfg.near_dedup.permutations, cfg.near_dedup.shingle_words, cfg.seed);
    let (bands, rows) = minhash::optimal_bands(cfg.near_dedup.threshold, cfg.near_dedup.permutations);
    let mut lsh = minhash::Lsh::new(bands, rows);
    let mut seen: HashSet<u128> = HashSet::new();
    let docs_path = out.join("documents.jsonl");
    let mut docs_out = std::io::BufWriter::new(std::fs::File::create(&docs_path).map_err(io(&docs_path))?);
    let mut train = ShardWriter {
        dir: out.into(),
        prefix: "train",
        limit: cfg.shard_tokens.max(1),
        buf: Vec::new(),
        next: 0,
        total: 0,
        written: Vec::new(),
    };
    let mut val = ShardWriter {
        dir: out.into(),
        prefix: "val",
        limit: cfg.shard_tokens.max(1),
        buf: Vec::new(),
        next: 0,
        total: 0,
        written: Vec::new(),
    };
    let mut stats = Stats { lsh: (bands, rows), ..Default::default() };
    let val_cut = (cfg.validation_fraction.clamp(0.0, 1.0) * 1e6) as u128;

    let mut batch: Vec<Doc> = Vec::with_capacity(cfg.batch_documents);
    let mut failure: Option<PrepareError> = None;
    let mut process = |batch: &mut Vec<Doc>, stats: &mut Stats| -> Result<(), PrepareError> {
        let checked: Vec<Checked> = batch
            .par_drain(..)
            .map(|d| {
                let bytes = d.text.len() as u64;
                let text = clean::clean(&d.text, &cfg.clean);
                let hash = content_hash(&text);
                let verdict = if text.trim().is_empty() {
                    Verdict::Empty
                } else if let Some(rule) = quality::check(&text, &cfg.quality) {
                    Verdict::Filtered(rule)
                } else if cfg.language.enabled
                    && !whatlang::detect(&text).is_some_and(|i| {
                        i.confidence() >= cfg.language.min_confidence
                            && cfg.language.keep.iter().any(|k| k == i.lang().code())
                    })
                {
                    Verdict::Language
                } else {
                    let sig = if cfg.near_dedup.enabled { hasher.signature(&text) } else { Vec::new() };
                    let mut tokens = tokenizer.encode(&text);
                    tokens.extend(tokenizer.eot());
                    Verdict::Candidate { text, sig, tokens }
                };
                Checked { id: d.id, hash, bytes, verdict }
            })
            .collect();
        for c in checked {
            stats.documents_in += 1;
            stats.bytes_in += c.bytes;
            // Exact duplicates first (of any earlier document, kept or not).
            let first = seen.insert(c.hash);
            if cfg.exact_dedup && !first && !matches!(c.verdict, Verdict::Empty) {
                stats.exact_duplicates += 1;
                continue;
            }
            match c.verdict {
                Verdict::Empty => stats.empty_after_cleaning += 1,
                Verdict::Filtered(rule) => *stats.filtered.entry(rule.to_string()).or_default() += 1,
                Verdict::Language => stats.language_filtered += 1,
                Verdict::Candidate { text, sig, tokens } => {
                    if cfg.near_dedup.enabled {
                        if lsh.query(&sig).is_some() {
                            stats.near_duplicates += 1;
                            continue;
                        }
                        lsh.insert(&sig);
                    }
                    let line = serde_json::json!({ "id": c.id, "text": text }).to_string();
                    writeln!(docs_out, "{line}").map_err(io(&docs_path))?;
                    stats.bytes_out += text.len() as u64;
                    stats.documents_out += 1;
                    if c.hash % 1_000_000 < val_cut {
                        val.push(&tokens)?;
                    } else {
                        train.push(&tokens)?;
                    }
                }
            }
        }
        Ok(())
    };
    for f in &files {
        input::read_file(f, &mut |doc: Result<Doc, Malformed>| {
            match doc {
                Ok(d) => batch.push(d),
                Err(m) => {
                    if cfg.strict {
                        failure = Some(PrepareError::Malformed { location: m.location, reason: m.reason });
                        return false;
                    }
                    stats.malformed += 1;
                    if stats.malformed_examples.len() < 10 {
                        stats.malformed_examples.push(format!("{}: {}", m.location, m.reason));
                    }
                }
            }
            if batch.len() >= cfg.batch_documents.max(1) {
                if let Err(e) = process(&mut batch, &mut stats) {
                    failure = Some(e);
                    return false;
                }
                progress(&stats);
            }
            true
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    process(&mut batch, &mut stats)?;
    progress(&stats);
    docs_out.flush().map_err(io(&docs_path))?;
    train.flush_full()?;
    val.flush_full()?;
    stats.train_tokens = train.total;
    stats.validation_tokens = val.total;
    stats.shards = train.written.into_iter().chain(val.written).collect();
    stats.seconds = started.elapsed().as_secs_f64();
    let stats_path = out.join("stats.json");
    std::fs::write(&stats_path, serde_json::to_string_pretty(&stats).unwrap_or_default() + "\n")
        .map_err(io(&stats_path))?;
    if stats.documents_out == 0 {
        return Err(PrepareError::NothingKept {
            documents_in: stats.documents_in,
            malformed: stats.malformed,
            empty: stats.empty_after_cleaning,
            duplicates: stats.exact_duplicates + stats.near_duplicates,
            filtered: stats.filtered.values().sum::<u64>() + stats.language_filtered,
            stats: stats_path,
        });
    }
    Ok(stats)
}
