//! End-to-end tests of the `dsv3c` command line: the foundation's acceptance commands.

mod common;

use std::path::{Path, PathBuf};

use common::{dsv3c, ok};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn inspect_671b_reports_the_published_counts() {
    let v = json(&ok(&["inspect", "spec/671b.yaml", "--json"]));
    let total = v["params"]["total"].as_u64().unwrap();
    assert!((total as f64 / 671_026_404_352.0 - 1.0).abs() < 1e-3);
    let active = v["params"]["active"].as_u64().unwrap() as f64;
    assert!((36.5e9..=37.7e9).contains(&active), "{active}");
    assert!(v["params"]["mtp"].as_u64().unwrap() > 0);
    assert_eq!(v["kv_cache"]["mla_bytes_per_token_layer"], 1152);
}

#[test]
fn inspect_accepts_every_spec_in_the_folder() {
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = ok(&["inspect", p.to_str().unwrap()]);
            assert!(out.contains("total") && out.contains("FLOPs per token"), "{out}");
        }
    }
}

#[test]
fn imported_deepseek_v3_config_has_the_same_totals_as_671b() {
    let out = tmp("x.yaml");
    ok(&["import-hf", "tests/fixtures/hf/deepseek-v3/config.json", "-o", out.to_str().unwrap()]);
    let a = json(&ok(&["inspect", out.to_str().unwrap(), "--json"]));
    let b = json(&ok(&["inspect", "spec/671b.yaml", "--json"]));
    for k in ["total", "active", "mtp"] {
        assert_eq!(a["params"][k], b["params"][k], "{k}");
    }
}

#[test]
fn export_then_import_round_trips() {
    let cfg = tmp("tiny-config.json");
    let back = tmp("tiny-back.yaml");
    ok(&["export-hf", "spec/tiny.yaml", "-o", cfg.to_str().unwrap()]);
    ok(&["import-hf", cfg.to_str().unwrap(), "-o", back.to_str().unwrap(), "--name", "tiny"]);
    let a = dsv3c_spec::load(&back).unwrap();
    let b = dsv3c_spec::load(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/tiny.yaml")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_broken_spec_fails_with_line_and_column_and_no_panic() {
    let broken = tmp("broken.yaml");
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/tiny.yaml")).unwrap();
    std::fs::write(&broken, tiny.replace("top_k: 2", "top_k: 20")).unwrap();
    let o = dsv3c(&["inspect", broken.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let line = tiny.lines().position(|l| l.contains("top_k: 2")).unwrap() + 1;
    assert!(err.contains(&format!("broken.yaml:{line}:3")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for bad in ["{", "name: [", "\u{0}\u{1}", "- - -", "d_model: 1e999999"] {
        std::fs::write(&broken, bad).unwrap();
        let o = dsv3c(&["inspect", broken.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !err.contains("panicked"), "{bad:?}: {err}");
        assert!(err.contains("broken.yaml:"), "{bad:?}: {err}");
    }
    let o = dsv3c(&["inspect", "no/such/spec.yaml"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no/such/spec.yaml"));
}

#[test]
fn memory_per_gpu_and_layout_errors() {
    let v =
        json(&ok(&["inspect", "spec/1b.yaml", "--json", "--gpus", "8", "--gpu-memory", "80", "--parallel", "ep=8"]));
    assert_eq!(v["memory"]["layout"]["dp"], 8);
    assert_eq!(v["memory"]["fits"], true);
    let o = dsv3c(&["inspect", "spec/1b.yaml", "--gpus", "8", "--gpu-memory", "80", "--parallel", "tp=3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tp"));
}

#[test]
fn select_recommends_a_spec_that_fits() {
    let v = json(&ok(&["select", "--gpus", "8", "--gpu-memory", "80", "--json"]));
    let choice = v["choice"].as_str().unwrap();
    let c = v["candidates"].as_array().unwrap().iter().find(|c| c["spec"] == choice).unwrap();
    assert!(c["best"]["total"].as_f64().unwrap() <= 80e9);
    // Nothing larger fits.
    let cands = v["candidates"].as_array().unwrap();
    let idx = cands.iter().position(|c| c["spec"] == choice).unwrap();
    assert!(cands[..idx].iter().all(|c| c["best"].is_null()));
    let text = ok(&["select", "--gpus", "8", "--gpu-memory", "80"]);
    assert!(text.contains("recommended: spec/"), "{text}");
}

#[test]
fn chinchilla_strict_exit_codes() {
    let v = json(&ok(&["chinchilla", "spec/1b.yaml", "--tokens", "12e9", "--json"]));
    assert_eq!(v["within"], true);
    assert!(!dsv3c(&["chinchilla", "spec/1b.yaml", "--tokens", "1e9", "--strict"]).status.success());
    assert!(dsv3c(&["chinchilla", "spec/1b.yaml", "--tokens", "1e9"]).status.success());
    assert!(!dsv3c(&["chinchilla", "spec/1b.yaml", "--tokens", "lots"]).status.success());
}

#[test]
fn every_gpu_recipe_is_compute_optimal_and_fits_and_inspect_agrees() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "yaml") || p.file_stem().unwrap() == "tiny" {
            continue;
        }
        n += 1;
        let v = json(&ok(&["chinchilla", p.to_str().unwrap(), "--strict", "--json"]));
        assert_eq!(v["within"], true, "{}", p.display());
        assert_eq!(v["memory"]["fits"], true, "{}", p.display());
        // inspect, given the recipe's layout and batch, computes the same memory.
        let text = std::fs::read_to_string(&p).unwrap();
        let field = |k: &str| text.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: "))).unwrap().to_string();
        let spec = dir.join(field("spec"));
        let l = &v["memory"]["layout"];
        let (tp, pp, ep, dp) = (
            l["tp"].as_u64().unwrap(),
            l["pp"].as_u64().unwrap(),
            l["ep"].as_u64().unwrap(),
            l["dp"].as_u64().unwrap(),
        );
        let parallel = format!("tp={tp},pp={pp},ep={ep},dp={dp}");
        let gpus = (tp * pp * dp).to_string();
        let i = json(&ok(&[
            "inspect",
            spec.to_str().unwrap(),
            "--json",
            "--gpus",
            &gpus,
            "--gpu-memory",
            "80",
            "--parallel",
            &parallel,
            "--micro-batch",
            &field("micro_batch"),
            "--seq-len",
            &field("seq_len"),
            "--moments",
            &field("moments"),
        ]));
        assert_eq!(i["memory"]["total"], v["memory"]["total"], "{}", p.display());
    }
    assert!(n >= 7);
    // The CPU default is a demonstration, not a compute-optimal run: strict mode says so.
    assert!(!dsv3c(&["chinchilla", "configs/tiny.yaml", "--strict"]).status.success());
}
