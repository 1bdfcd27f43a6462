//! `dsv3c data prepare` end to end: the acceptance corpus, formats, malformed input.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use dsv3c_data::synth::{corpus, jsonl, Mix};

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn prepare(inputs: &[&Path], out: &Path) -> String {
    let mut args = vec!["data".to_string(), "prepare".into(), "--input".into()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_dsv3c")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_acceptance_corpus_is_deduplicated_and_filtered() {
    let dir = tmp("prepare-acceptance");
    let docs = corpus(Mix { distinct: 400, exact: 60, near: 60, junk: 60, edit: 0.01 }, 11);
    std::fs::write(dir.join("corpus.jsonl"), jsonl(&docs)).unwrap();
    let out = dir.join("out");
    prepare(&[&dir.join("corpus.jsonl")], &out);

    let kept: Vec<String> = std::fs::read_to_string(out.join("documents.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    let base = |id: &str| id.split_once("-of-").map_or(id.to_string(), |(_, b)| b.to_string());
    let represented: HashSet<String> = kept.iter().filter(|id| !id.starts_with('j')).map(|id| base(id)).collect();
    assert!(represented.len() >= 390, "only {} distinct documents represented", represented.len());
    let kept_set: HashSet<&String> = kept.iter().collect();
    for id in kept.iter().filter(|id| id.starts_with('x')) {
        assert!(!kept_set.contains(&base(id)), "exact copy {id} survives beside its original");
    }
    // A near copy that came first is kept in place of its original; one kept beside it is a miss.
    let near = kept.iter().filter(|id| id.starts_with('n') && kept_set.contains(&base(id))).count();
    // And every pair of near copies of one original collapses too.
    let copies_of = |b: &str| kept.iter().filter(|id| base(id) == b).count();
    assert!(represented.iter().filter(|b| copies_of(b) > 1).count() <= 6);
    let junk = kept.iter().filter(|id| id.starts_with('j')).count();
    assert!(near <= 6, "{near} near copies survive beside their original");
    assert!(junk <= 6, "{junk} junk documents kept");

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["documents_in"], 580);
    assert_eq!(stats["documents_out"].as_u64().unwrap() as usize, kept.len());
    assert!(stats["exact_duplicates"].as_u64().unwrap() >= 55);
    let shards = stats["shards"].as_array().unwrap();
    assert!(!shards.is_empty());
    let tokens: usize =
        shards.iter().map(|s| dsv3c_runtime::data::shard::read(&out.join(s.as_str().unwrap())).unwrap().len()).sum();
    assert_eq!(tokens as u64, stats["train_tokens"].as_u64().unwrap() + stats["validation_tokens"].as_u64().unwrap());

    // Deterministic: the same input gives the same output.
    let again = dir.join("again");
    prepare(&[&dir.join("corpus.jsonl")], &again);
    assert_eq!(
        std::fs::read(out.join("documents.jsonl")).unwrap(),
        std::fs::read(again.join("documents.jsonl")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join(shards[0].as_str().unwrap())).unwrap(),
        std::fs::read(again.join(shards[0].as_str().unwrap())).unwrap()
    );
}

#[test]
fn text_folders_parquet_and_malformed_lines() {
    let dir = tmp("prepare-formats");
    let docs = corpus(Mix { distinct: 6, exact: 0, near: 0, junk: 0, edit: 0.0 }, 3);
    std::fs::create_dir_all(dir.join("texts/sub")).unwrap();
    std::fs::write(dir.join("texts/a.txt"), &docs[0].1).unwrap();
    std::fs::write(dir.join("texts/sub/b.txt"), &docs[1].1).unwrap();
    std::fs::write(dir.join("texts/sub/c.txt"), docs[0].1.as_bytes()).unwrap();
    let mut lines = jsonl(&docs[2..4]);
    lines.push_str("{not json\n{\"id\": 5}\n\n");
    std::fs::write(dir.join("mixed.jsonl"), lines).unwrap();
    std::fs::write(dir.join("bad.parquet"), b"PAR1 nope").unwrap();
    let parquet = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/docs.parquet");
    let out = dir.join("out");
    let stdout = prepare(&[&dir.join("texts"), &dir.join("mixed.jsonl"), &dir.join("bad.parquet"), &parquet], &out);
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["malformed"], 3, "{stats}");
    assert_eq!(stats["exact_duplicates"], 1, "c.txt repeats a.txt");
    let ids: BTreeMap<String, String> = std::fs::read_to_string(out.join("documents.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v["text"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(ids.keys().any(|k| k.starts_with("pq-")), "Parquet documents read: {:?}", ids.keys());
    assert!(ids.contains_key("d2") || ids.contains_key(&docs[2].0));
    assert!(stdout.contains("documents out"));
}
