//! Writes a synthetic corpus (JSONL) for benchmarks: `synth_corpus OUT.jsonl DISTINCT [SEED]`,
//! with 15% exact copies, 15% near copies (1% of words replaced) and 15% junk.

use dsv3c_data::synth::{corpus, jsonl, Mix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (out, distinct) = match (args.get(1), args.get(2)) {
        (Some(o), Some(n)) => (o.clone(), n.parse::<usize>()?),
        _ => return Err("usage: synth_corpus OUT.jsonl DISTINCT [SEED]".into()),
    };
    let seed = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let extra = distinct * 15 / 100;
    let docs = corpus(Mix { distinct, exact: extra, near: extra, junk: extra, edit: 0.01 }, seed);
    std::fs::write(&out, jsonl(&docs))?;
    println!("{} documents -> {out}", docs.len());
    Ok(())
}
