//! `dsv3c generate` end to end: transformers' greedy `generate` in float64 on small random
//! DeepseekV3 models (tests/parity/make_generate_fixtures.py) is matched token for token, up to the
//! first step whose two best logits lie within 1e-3; the JSON line holds what it promises; text
//! goes through a tokenizer; bad requests get clear errors.

mod common;

use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/generate");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    v.sort();
    assert!(v.len() >= 3, "generation fixtures are missing");
    v
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = common::ok(args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<Vec<u64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()).collect()
}

#[test]
fn greedy_generation_matches_transformers_float64() {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let prompts = dir.join("prompts.json");
        let mut args = vec!["generate", "--hf", dir.to_str().unwrap(), "--prompt-tokens", prompts.to_str().unwrap()];
        args.extend(["--max-new-tokens", "24", "--temperature", "0", "--json"]);
        let got = json(&args);
        let (got_t, want) = (ids(&got["tokens"]), ids(&expected["tokens"]));
        assert_eq!(got_t.len(), want.len(), "{name}: one continuation per prompt");
        for (b, (g, w)) in got_t.iter().zip(&want).enumerate() {
            let until = expected["compare_until"][b].as_u64().unwrap() as usize;
            assert_eq!(g[..until.min(g.len())], w[..until], "{name}, prompt {b}: tokens before the first near-tie");
            if until == w.len() {
                assert_eq!(g, w, "{name}, prompt {b}: no near-tie, so the whole continuation (and its end)");
            }
        }
        assert!(got["kv_cache_bytes"].as_u64().unwrap() > 0);
        assert!(got["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(ids(&got["tokens"]).len(), got["logprobs"].as_array().unwrap().len());
        assert!(got.get("text").is_none(), "{name}: no tokenizer, no text");
    }
}

/// A fixture whose generation config has an end-of-sequence id that transformers stopped at.
#[test]
fn generation_stops_at_the_end_of_sequence_unless_told_not_to() {
    let dir = fixtures().into_iter().find(|d| {
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
        ids(&e["tokens"]).iter().any(|t| t.len() < 24)
    });
    let Some(dir) = dir else { panic!("no fixture ends early: the stop is untested") };
    let prompts = dir.join("prompts.json");
    let base = ["generate", "--hf", dir.to_str().unwrap(), "--prompt-tokens", prompts.to_str().unwrap(), "--json"];
    let stopped = ids(&json(&[&base[..], &["--max-new-tokens", "24"]].concat())["tokens"]);
    let all = ids(&json(&[&base[..], &["--max-new-tokens", "24", "--ignore-eos"]].concat())["tokens"]);
    assert!(stopped.iter().any(|t| t.len() < 24));
    assert!(all.iter().all(|t| t.len() == 24));
    for (s, a) in stopped.iter().zip(&all) {
        assert_eq!(s[..], a[..s.len()]);
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = fixtures().remove(0);
    let d = dir.to_str().unwrap();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let write = |name: &str, text: &str| {
        let p = tmp.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        (write("empty.json", "[[1, 2], []]"), vec![], "prompt 1 is empty"),
        (write("range.json", "[[1, 96]]"), vec![], "outside the vocabulary of 96"),
        (write("long.json", "[[1, 2, 3]]"), vec!["--max-new-tokens", "400"], "max_seq_len"),
        (write("shape.json", "{\"a\": 1}"), vec![], "JSON array of arrays"),
    ];
    for (file, extra, want) in cases {
        let mut args = vec!["generate", "--hf", d, "--prompt-tokens", file.as_str()];
        args.extend(extra);
        let o = common::dsv3c(&args);
        assert!(!o.status.success(), "{file}");
        let err = common::flat_stderr(&o);
        assert!(err.contains(want), "{file}: {err}");
    }
    let o = common::dsv3c(&["generate", "--hf", d, "--prompt", "hello"]);
    assert!(common::flat_stderr(&o).contains("no tokenizer"), "{}", common::flat_stderr(&o));
    let o =
        common::dsv3c(&["generate", "--hf", d, "--prompt-tokens", &write("one.json", "[[1]]"), "--speculative", "mtp"]);
    assert!(common::flat_stderr(&o).contains("MTP"), "{}", common::flat_stderr(&o));
}

/// On a briefly trained `tiny` checkpoint (text through its recipe's GPT-2 tokenizer): MTP speculative
/// decoding gives plain greedy's tokens and reports its acceptance; an FP8 cache keeps the mean
/// log-probability within 1% of a bf16 cache's.
#[test]
fn speculation_and_the_fp8_cache_on_a_trained_tiny_checkpoint() {
    let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generate-tiny");
    let _ = std::fs::remove_dir_all(&run);
    let run_s = run.to_str().unwrap();
    common::ok(&["train", "--steps", "20", "--micro-batch", "2", "--seq-len", "32", "--out", run_s]);
    let ckpt = run.join("checkpoints/step-000020");
    let c = ckpt.to_str().unwrap();
    let prompt = "The compiler reads a model spec and writes";
    let base = ["generate", "--checkpoint", c, "--prompt", prompt, "--max-new-tokens", "16", "--json"];
    let plain = json(&base);
    let o = common::dsv3c(&[&base[..], &["--speculative", "mtp"]].concat());
    assert!(o.status.success(), "{}", common::flat_stderr(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    let spec: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(spec["tokens"], plain["tokens"], "speculation changed the greedy tokens");
    let rate = spec["mtp_acceptance"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate));
    assert!(common::flat_stderr(&o).contains("MTP acceptance"), "{}", common::flat_stderr(&o));
    assert!(plain["mtp_acceptance"].is_null());
    assert_eq!(plain["text"].as_array().unwrap().len(), 1, "text through the recipe's tokenizer");
    let mean = |v: &serde_json::Value| {
        let lp: Vec<f64> = v["logprobs"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        lp.iter().sum::<f64>() / lp.len() as f64
    };
    let bf16 = json(&[&base[..], &["--kv-cache", "bf16"]].concat());
    let fp8 = json(&[&base[..], &["--kv-cache", "fp8"]].concat());
    let (a, b) = (mean(&bf16), mean(&fp8));
    assert!(((b - a) / a).abs() < 0.01, "mean log-probability: bf16 cache {a}, fp8 cache {b}");
    // tiny computes in f32, so its cache defaults to f32: twice bf16's bytes, more than FP8's.
    let bytes = |v: &serde_json::Value| v["kv_cache_bytes"].as_u64().unwrap();
    assert_eq!(bytes(&plain), 2 * bytes(&bf16));
    assert!(bytes(&fp8) < bytes(&bf16));
}

/// The same generation through the GPU backend over the PTX emulator (the decode kernels as NVRTC
/// compiles them, under the sanitizer), plain and over an FP8 cache: the CPU's tokens, and its
/// log-probabilities to float rounding.
#[test]
fn generation_in_the_emulator_follows_the_cpu() {
    if !common::nvrtc_or_skip("generation in the emulator") {
        return;
    }
    let dir = fixtures().into_iter().find(|d| d.ends_with("gen_directq_rope")).unwrap();
    let prompts = dir.join("prompts.json");
    for kv in ["bf16", "fp8"] {
        let run = |device: &str| {
            json(&[
                "generate",
                "--hf",
                dir.to_str().unwrap(),
                "--prompt-tokens",
                prompts.to_str().unwrap(),
                "--max-new-tokens",
                "5",
                "--kv-cache",
                kv,
                "--json",
                "--device",
                device,
            ])
        };
        let (cpu, sim) = (run("cpu"), run("sim"));
        assert_eq!(sim["tokens"], cpu["tokens"], "{kv} cache");
        let flat = |v: &serde_json::Value| -> Vec<f64> {
            v["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        for (a, b) in flat(&sim).iter().zip(flat(&cpu)) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{kv} cache: log-probability {a} vs {b}");
        }
    }
}
