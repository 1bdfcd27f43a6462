//! `dsv3c data prepare --input PATH... --out DIR [--config data.yaml]`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_data::config::PrepareConfig;
use dsv3c_spec::inspect::human_count;
use miette::{miette, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Data {
    /// Clean, deduplicate (exact and MinHash), filter and tokenize documents into shards.
    Prepare(PrepareArgs),
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// Input files or folders: JSONL (field `text`, optional `id`), plain text (a document per
    /// file), Parquet (column `text`).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Output folder: documents.jsonl, train-*.bin / val-*.bin shards, stats.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Stage settings (YAML); every field has a default.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(d: Data) -> Result<ExitCode> {
    let Data::Prepare(a) = d;
    let (cfg, base) = match &a.config {
        Some(p) => {
            let cfg = PrepareConfig::load(p).map_err(|e| miette!("{e}"))?;
            (cfg, p.parent().map(PathBuf::from).unwrap_or_default())
        }
        None => (PrepareConfig::default(), PathBuf::from(".")),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    let progress = |s: &dsv3c_data::Stats| {
        if let Some(pb) = &bar {
            pb.set_message(format!(
                "{} documents in, {} kept, {} exact and {} near duplicates, {} filtered",
                s.documents_in,
                s.documents_out,
                s.exact_duplicates,
                s.near_duplicates,
                s.filtered.values().sum::<u64>()
            ));
        }
    };
    let s = dsv3c_data::prepare(&a.input, &a.out, &cfg, &base, &progress).map_err(|e| miette!("{e}"))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    println!("documents in       {}", s.documents_in);
    println!("malformed          {}", s.malformed);
    println!("empty after clean  {}", s.empty_after_cleaning);
    println!("exact duplicates   {}", s.exact_duplicates);
    println!(
        "near duplicates    {}  (MinHash {} perms, Jaccard {}, LSH {} bands x {} rows)",
        s.near_duplicates, cfg.near_dedup.permutations, cfg.near_dedup.threshold, s.lsh.0, s.lsh.1
    );
    for (rule, n) in &s.filtered {
        println!("filtered {rule:<18} {n}");
    }
    if cfg.language.enabled {
        println!("language filtered  {}", s.language_filtered);
    }
    println!("documents out      {}", s.documents_out);
    println!(
        "tokens             {} train, {} validation in {} shards",
        human_count(s.train_tokens as f64),
        human_count(s.validation_tokens as f64),
        s.shards.len()
    );
    println!(
        "{:.2}s: {:.0} documents/s, {:.1} MB/s -> {}",
        s.seconds,
        s.documents_in as f64 / s.seconds.max(1e-9),
        s.bytes_in as f64 / 1e6 / s.seconds.max(1e-9),
        a.out.display()
    );
    for m in &s.malformed_examples {
        eprintln!("malformed: {m}");
    }
    Ok(ExitCode::SUCCESS)
}
