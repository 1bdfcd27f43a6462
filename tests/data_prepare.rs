//! `dsv3c data prepare` end to end: the acceptance corpus, formats, malformed input.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::flat_stderr;
use dsv3c_data::synth::{corpus, jsonl, Mix};
use dsv3c_runtime::init::SplitMix64;

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `dsv3c data prepare` with the given data recipe (YAML text), if any.
fn run_prepare(inputs: &[&Path], out: &Path, config: Option<&str>) -> std::process::Output {
    let mut args = vec!["data".to_string(), "prepare".into(), "--input".into()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    if let Some(yaml) = config {
        let path = out.with_extension("data.yaml");
        std::fs::write(&path, yaml).unwrap();
        args.extend(["--config".into(), path.display().to_string()]);
    }
    Command::new(env!("CARGO_BIN_EXE_dsv3c")).args(&args).output().unwrap()
}

fn prepare_with(inputs: &[&Path], out: &Path, config: Option<&str>) -> String {
    let o = run_prepare(inputs, out, config);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn prepare(inputs: &[&Path], out: &Path) -> String {
    prepare_with(inputs, out, None)
}

fn stats(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap()
}

/// The ids of the documents kept, in order.
fn kept_ids(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("documents.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect()
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
    // The junk is distinct (no dedup stage removes it): the quality rules remove all of it.
    let filtered = &stats["filtered"];
    assert_eq!(filtered["too_few_words"], 20, "{filtered}");
    assert_eq!(filtered["duplicate_lines"], 20, "{filtered}");
    assert_eq!(filtered.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 60, "{filtered}");
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

/// Words for test prose: common English with the stop words the quality rules look for.
const WORDS: &[&str] = &[
    "the", "river", "runs", "to", "a", "quiet", "town", "and", "people", "walk", "with", "dogs", "along", "its",
    "banks", "under", "old", "trees", "of", "that", "have", "be", "market", "bread", "morning", "light", "garden",
    "window", "stone", "bridge", "winter", "summer", "children", "school", "letter", "music", "evening", "street",
];
/// Words without any of the eight stop words (the, be, to, of, and, that, have, with).
const NO_STOP_WORDS: &[&str] = &[
    "river", "runs", "quiet", "town", "people", "walk", "dogs", "along", "banks", "under", "trees", "market", "bread",
    "morning", "light", "garden", "window", "stone", "bridge", "winter", "summer", "children",
];
/// Short words only (mean length below 3).
const SHORT_WORDS: &[&str] =
    &["a", "an", "is", "it", "to", "be", "of", "at", "on", "in", "so", "we", "go", "up", "the"];

/// `lines` lines of `per_line` random words from `vocab`, each line ending in `end`.
fn lines_of(r: &mut SplitMix64, vocab: &[&str], lines: usize, per_line: usize, end: &str) -> Vec<String> {
    (0..lines)
        .map(|_| {
            let words: Vec<&str> = (0..per_line).map(|_| vocab[(r.next_u64() % vocab.len() as u64) as usize]).collect();
            format!("{}{end}", words.join(" "))
        })
        .collect()
}

/// A distinct document (from `k`) that fails quality rule `rule` and no rule checked before it.
fn junk(rule: &str, k: u64) -> String {
    let mut r = SplitMix64::new(1000 + k);
    let prose = |r: &mut SplitMix64, n: usize| lines_of(r, WORDS, n, 10, ".");
    match rule {
        "too_few_words" => format!("A short note, number {k}, about the river and the town."),
        "too_many_words" => prose(&mut r, 10_001).join("\n"),
        "mean_word_length" => lines_of(&mut r, SHORT_WORDS, 8, 10, ".").join("\n"),
        // One word in four is a hashtag.
        "symbol_word_ratio" => {
            prose(&mut r, 8).iter().map(|l| l.replacen(' ', &format!(" #tag{k} "), 3)).collect::<Vec<_>>().join("\n")
        }
        // One word in three is a number.
        "alpha_word_fraction" => prose(&mut r, 8)
            .iter()
            .map(|l| {
                l.split(' ').enumerate().map(|(i, w)| if i % 3 == 1 { "2024" } else { w }).collect::<Vec<_>>().join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "punctuated_lines" => lines_of(&mut r, WORDS, 8, 10, "").join("\n"),
        // Every line twice.
        "duplicate_lines" => {
            prose(&mut r, 6).iter().flat_map(|l| [l.clone(), l.clone()]).collect::<Vec<_>>().join("\n")
        }
        // Ten distinct paragraphs of five lines, then one one-line paragraph five times: few
        // repeated lines (5 of 56) but many repeated paragraphs (5 of 16).
        "duplicate_paragraphs" => {
            let mut paragraphs: Vec<String> = (0..10).map(|_| prose(&mut r, 5).join("\n")).collect();
            let refrain = prose(&mut r, 1).remove(0);
            paragraphs.extend(std::iter::repeat_n(refrain, 6));
            paragraphs.join("\n\n")
        }
        // "credit card" after every third word.
        "top_2gram" => prose(&mut r, 8)
            .iter()
            .map(|l| l.replace(" a ", " credit card "))
            .map(|l| {
                l.split(' ')
                    .enumerate()
                    .flat_map(|(i, w)| if i % 3 == 2 { vec![w, "credit", "card"] } else { vec![w] })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        // A 20-word passage five times, each time in a different line among distinct prose.
        "duplicate_5grams" => {
            let passage = lines_of(&mut r, WORDS, 1, 20, "").remove(0);
            (0..5)
                .flat_map(|_| {
                    let mut l = prose(&mut r, 2);
                    l[0] = format!("{} {passage}.", l[0].trim_end_matches('.'));
                    l
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        "stop_words" => lines_of(&mut r, NO_STOP_WORDS, 8, 10, ".").join("\n"),
        _ => unreachable!("{rule}"),
    }
}

/// Word 3-gram shingles of the lower-cased text (the near-dedup definition), computed here.
fn shingles(text: &str) -> HashSet<Vec<String>> {
    let words: Vec<String> = text.to_lowercase().split_whitespace().map(String::from).collect();
    words.windows(3).map(<[String]>::to_vec).collect()
}

fn jaccard(a: &str, b: &str) -> f64 {
    let (a, b) = (shingles(a), shingles(b));
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

/// Two documents sharing a prefix of `head`'s lines and ending in a line of the first words of
/// different tails, at least 80 words long, with the exact shingle Jaccard closest to `target`.
fn pair_near(head: &str, tail_a: &str, tail_b: &str, target: f64) -> (String, String, f64) {
    let h: Vec<&str> = head.lines().collect();
    let (a, b): (Vec<&str>, Vec<&str>) = (tail_a.split_whitespace().collect(), tail_b.split_whitespace().collect());
    let mut best = (String::new(), String::new(), f64::INFINITY);
    for keep in 1..=h.len() {
        for t in 1..=a.len().min(b.len()).min(100) {
            let x = format!("{}\n{}.", h[..keep].join("\n"), a[..t].join(" "));
            let y = format!("{}\n{}.", h[..keep].join("\n"), b[..t].join(" "));
            let j = jaccard(&x, &y);
            // Long enough for the quality rules (50 words) to pass both.
            if x.split_whitespace().count() >= 80 && (j - target).abs() < (best.2 - target).abs() {
                best = (x, y, j);
            }
        }
    }
    best
}

#[test]
fn quality_rules_and_the_near_dedup_threshold_decide_what_is_kept() {
    let dir = tmp("prepare-quality");
    let mut docs = corpus(Mix { distinct: 60, exact: 0, near: 0, junk: 0, edit: 0.0 }, 5);
    // Every rule but too_many_words (whose document is 100k words) three times.
    let mut expected = BTreeMap::new();
    for rule in dsv3c_data::quality::RULES {
        let n = if rule == "too_many_words" { 1 } else { 3 };
        for k in 0..n {
            docs.push((format!("junk-{rule}-{k}"), junk(rule, k)));
        }
        expected.insert(rule.to_string(), serde_json::json!(n));
    }
    // Near pairs on each side of the threshold 0.8: four at Jaccard 0.92 (one of each is a near
    // duplicate) and six at 0.6 (both kept), built from prose no other document shares.
    let sources = corpus(Mix { distinct: 30, exact: 0, near: 0, junk: 0, edit: 0.0 }, 77);
    for (i, c) in sources.chunks(3).enumerate() {
        let target = if i < 4 { 0.92 } else { 0.6 };
        let (a, b, j) = pair_near(&c[0].1, &c[1].1, &c[2].1, target);
        assert!((j - target).abs() < 0.01, "pair {i}: Jaccard {j}, wanted {target}");
        let side = if i < 4 { "above" } else { "below" };
        docs.push((format!("pair-{side}-{i}-a"), a));
        docs.push((format!("pair-{side}-{i}-b"), b));
    }
    std::fs::write(dir.join("corpus.jsonl"), jsonl(&docs)).unwrap();
    let out = dir.join("out");
    prepare(&[&dir.join("corpus.jsonl")], &out);
    let s = stats(&out);
    assert_eq!(s["filtered"], serde_json::Value::Object(expected.into_iter().collect()), "{s}");
    let kept = kept_ids(&out);
    assert!(kept.iter().all(|id| !id.starts_with("junk")), "{kept:?}");
    assert_eq!(kept.iter().filter(|id| id.starts_with('d')).count(), 60, "every prose document is kept");
    let halves = |side: &str| kept.iter().filter(|id| id.starts_with(&format!("pair-{side}"))).count();
    // MinHash LSH is probabilistic: at threshold 0.8 (9 bands of 13 rows) a pair at Jaccard 0.92
    // collides with p = 0.96 and one at 0.6 with p = 0.01; at threshold 0.5 (25 x 5) 0.6 collides
    // with p = 0.87, and at 0.95 (3 x 42) 0.92 with p = 0.1.
    assert!(halves("above") <= 5, "{} of 8 halves of the 0.92 pairs kept: near duplicates missed", halves("above"));
    assert!(halves("below") >= 11, "{} of 12 halves of the 0.6 pairs kept: distinct documents lost", halves("below"));
    assert_eq!(s["near_duplicates"].as_u64().unwrap() as usize, 20 - halves("above") - halves("below"));

    // With the rules off, the same junk is kept: nothing else removes it.
    let off = dir.join("off");
    prepare_with(&[&dir.join("corpus.jsonl")], &off, Some("quality: {enabled: false}\n"));
    assert_eq!(kept_ids(&off).iter().filter(|id| id.starts_with("junk")).count(), 31);
}

#[test]
fn language_identification_keeps_the_listed_languages() {
    let dir = tmp("prepare-language");
    let mut docs = corpus(Mix { distinct: 5, exact: 0, near: 0, junk: 0, edit: 0.0 }, 9);
    let french = [
        "Le marché du village ouvre chaque matin avant le lever du soleil.",
        "Les enfants marchent vers l'école en chantant des chansons anciennes.",
        "Nous avons mangé du pain frais avec du fromage et des pommes.",
        "La rivière traverse la vallée et rejoint la mer près du vieux port.",
        "Pendant l'hiver, les habitants restent chez eux près de la cheminée.",
        "Elle écrit une longue lettre à sa sœur qui habite à Marseille.",
    ];
    let german = [
        "Der Markt im Dorf öffnet jeden Morgen vor Sonnenaufgang.",
        "Die Kinder gehen singend zur Schule und lachen über alte Lieder.",
        "Wir haben frisches Brot mit Käse und Äpfeln gegessen.",
        "Der Fluss fließt durch das Tal und mündet beim alten Hafen ins Meer.",
        "Im Winter bleiben die Bewohner zu Hause am warmen Ofen.",
        "Sie schreibt einen langen Brief an ihre Schwester in München.",
    ];
    for (lang, sentences) in [("fra", french), ("deu", german)] {
        for k in 0..3 {
            let text: Vec<&str> = (0..12).map(|i| sentences[(i * (k + 1) + k) % sentences.len()]).collect();
            docs.push((format!("{lang}-{k}"), text.join("\n")));
        }
    }
    std::fs::write(dir.join("corpus.jsonl"), jsonl(&docs)).unwrap();
    // Quality rules off: their English stop-word rule would remove the other languages first.
    let base = "quality: {enabled: false}\nnear_dedup: {enabled: false}\n";
    let out = dir.join("eng");
    prepare_with(&[&dir.join("corpus.jsonl")], &out, Some(&format!("{base}language: {{enabled: true}}\n")));
    assert_eq!(stats(&out)["language_filtered"], 6);
    assert!(kept_ids(&out).iter().all(|id| id.starts_with('d')));
    let out = dir.join("eng-fra");
    prepare_with(
        &[&dir.join("corpus.jsonl")],
        &out,
        Some(&format!("{base}language: {{enabled: true, keep: [eng, fra]}}\n")),
    );
    assert_eq!(stats(&out)["language_filtered"], 3);
    assert_eq!(kept_ids(&out).iter().filter(|id| id.starts_with("fra")).count(), 3);
    let out = dir.join("all");
    prepare_with(&[&dir.join("corpus.jsonl")], &out, Some(base));
    assert_eq!(kept_ids(&out).len(), 11, "identification is off by default");
}

#[test]
fn strict_mode_stops_at_the_first_malformed_line_and_bad_inputs_are_errors() {
    let dir = tmp("prepare-strict");
    let docs = corpus(Mix { distinct: 4, exact: 0, near: 0, junk: 0, edit: 0.0 }, 4);
    let mut lines = jsonl(&docs[..2]);
    lines.push_str("{\"id\": \"no-text\"}\n");
    lines.push_str(&jsonl(&docs[2..]));
    std::fs::write(dir.join("c.jsonl"), lines).unwrap();
    let input = dir.join("c.jsonl");
    let lenient = dir.join("lenient");
    prepare(&[&input], &lenient);
    assert_eq!(stats(&lenient)["malformed"], 1);
    assert_eq!(kept_ids(&lenient).len(), 4);
    let o = run_prepare(&[&input], &dir.join("strict"), Some("strict: true\n"));
    let err = flat_stderr(&o);
    assert!(!o.status.success(), "strict mode accepted a malformed line");
    assert!(err.contains("c.jsonl:3") && err.contains("no string field `text`") && err.contains("strict"), "{err}");

    // A path that does not exist is an error, not an empty dataset.
    let o = run_prepare(&[&dir.join("nonexistent")], &dir.join("none"), None);
    let err = flat_stderr(&o);
    assert!(!o.status.success() && err.contains("nonexistent") && err.contains("does not exist"), "{err}");
    // So is input from which nothing survives.
    std::fs::write(dir.join("junk.jsonl"), jsonl(&[("j".into(), "too short.".into())])).unwrap();
    let o = run_prepare(&[&dir.join("junk.jsonl")], &dir.join("empty"), None);
    let err = flat_stderr(&o);
    assert!(!o.status.success() && err.contains("no document survived") && err.contains("1 filtered"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
