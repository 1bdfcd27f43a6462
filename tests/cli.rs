//! End-to-end tests of the `dsv3c` command line: the foundation's acceptance commands.

mod common;

use std::path::{Path, PathBuf};

use common::{dsv3c, flat_stderr, ok};

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
    // The chosen layout's bytes are inspect's (whose figures are checked by hand above), and the
    // smallest of the layouts tried is no larger.
    let best = &c["best"];
    let l = &best["layout"];
    let parallel = format!("tp={},pp={},ep={},dp={}", l["tp"], l["pp"], l["ep"], l["dp"]);
    let spec = format!("spec/{choice}.yaml");
    let i = json(&ok(&["inspect", &spec, "--json", "--gpus", "8", "--gpu-memory", "80", "--parallel", &parallel]));
    for k in ["params", "weights", "master", "gradients", "optimizer", "activations", "total"] {
        assert_eq!(i["memory"][k], best[k], "{choice} {parallel}: {k}");
    }
    assert!(c["min_total"].as_f64().unwrap() <= best["total"].as_f64().unwrap());
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
        // The CPU recipes (tiny, the FP8 recipe's demonstration) are short runs, not compute-optimal ones.
        let cpu_recipes = ["tiny", "tiny-dp2", "tiny-3d", "small-fp8"];
        if p.extension().is_none_or(|e| e != "yaml") || cpu_recipes.iter().any(|r| p.file_stem().unwrap() == *r) {
            continue;
        }
        n += 1;
        let v = json(&ok(&["chinchilla", p.to_str().unwrap(), "--strict", "--json"]));
        assert_eq!(v["within"], true, "{}", p.display());
        assert_eq!(v["memory"]["fits"], true, "{}", p.display());
        // inspect, given the recipe's layout and batch, computes the same memory.
        let text = std::fs::read_to_string(&p).unwrap();
        let field = |k: &str| text.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: "))).unwrap().to_string();
        let field_or =
            |k: &str| text.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: "))).map(str::to_string);
        // The recipe's expert capacity (inside its `parallel:` map) and recomputation.
        let capacity = text
            .split("expert_capacity: ")
            .nth(1)
            .map(|rest| rest.split(['}', ',']).next().unwrap().trim().to_string());
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
        let (mb, seq, moments) = (field("micro_batch"), field("seq_len"), field("moments"));
        let mut args = vec![
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
            &mb,
            "--seq-len",
            &seq,
            "--moments",
            &moments,
        ];
        if let Some(c) = &capacity {
            args.extend(["--expert-capacity", c.as_str()]);
        }
        if field_or("recompute").as_deref() == Some("selective") {
            args.push("--recompute");
        }
        if field_or("fp8_cache").as_deref() == Some("true") {
            args.push("--fp8-cache");
        }
        let i = json(&ok(&args));
        assert_eq!(i["memory"]["total"], v["memory"]["total"], "{}", p.display());
    }
    assert!(n >= 7);
    // The CPU default is a demonstration, not a compute-optimal run: strict mode says so.
    assert!(!dsv3c(&["chinchilla", "configs/tiny.yaml", "--strict"]).status.success());
}

/// A small spec whose memory is worked out by hand below: d 64, vocab 1000, 4 layers (1 dense,
/// 3 MoE), MLA without q-LoRA (4 heads, kv rank 32, nope 16, rope 8, v 16), 8 routed experts of
/// width 32 (top-2) and one shared; bf16 weights with an f32 master, bf16 compute.
const HAND_SPEC: &str = "name: hand
vocab_size: 1000
d_model: 64
n_layers: 4
max_seq_len: 256
norm: {type: rmsnorm, eps: 1.0e-6}
dense: {n_layers: 1, intermediate_size: 128}
attention:
  mla: {n_heads: 4, q_lora_rank: 0, kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, rope_theta: 10000}
  pattern: [mla]
moe: {n_routed_experts: 8, n_shared_experts: 1, top_k: 2, moe_intermediate_size: 32, score_func: sigmoid, n_group: 1, top_groups: 1, route_scale: 1.0, norm_topk_prob: true, bias_update_speed: 0.001, seq_aux_alpha: 0.0001}
precision: {master: f32, param: bf16, compute: bf16}
";

// Parameters (HF shapes):
//   attention: q_proj 4·24·64 = 6144, kv_a_proj_with_mqa (32+8)·64 = 2560, kv_a_layernorm 32,
//     kv_b_proj 4·(16+16)·32 = 4096, o_proj 64·64 = 4096, two layer norms 2·64 = 128 -> 17056
//   dense layer: 17056 + MLP 3·64·128 = 24576 -> 41632
//   MoE layer: 17056 + router 8·64 = 512 + shared 3·64·32 = 6144 + routed 8·6144 = 49152 -> 72864
//     (the 8-entry correction bias is a buffer), of which 72864 − 49152 = 23712 non-expert
//   embedding 1000·64 = 64000, head 64000, final norm 64
//   total: 64000 + 41632 + 3·72864 + 64 + 64000 = 388288
// Activations kept per token and layer, bf16 (2 bytes) unless noted:
//   attention: 2·64 (input, norm) + 4·24 (q) + 40 (kv_a) + 32 (kv norm) + 8 (k_pe) + 4·32 (kv_b)
//     + 4·16 (o) = 496 elements = 992 B, + 4 heads·4 B softmax stats = 1008 B
//   FFN input and norm 2·64·2 = 256 B -> 1264 B before the MLP
//   dense MLP: gate, up, product 3·128·2 = 768 B -> 2032 B
//   MoE: router scores 8·4 = 32 B; per slot its expert, weight and two places in the sorted rows
//     4·4 = 16 B and the dispatched input, gate, up, product and expert output (2·64 + 3·32)·2 = 448 B,
//     2 slots = 928 B; shared 3·32·2 = 192 B -> 1264 + 1152 = 2416 B
#[test]
fn memory_per_gpu_matches_hand_computed_figures_for_two_layouts() {
    let spec = tmp("hand.yaml");
    std::fs::write(&spec, HAND_SPEC).unwrap();
    let s = spec.to_str().unwrap();
    let v = json(&ok(&[
        "inspect",
        s,
        "--json",
        "--gpus",
        "1",
        "--gpu-memory",
        "80",
        "--micro-batch",
        "1",
        "--seq-len",
        "128",
    ]));
    assert_eq!(v["params"]["total"], 388288);
    // One GPU, 128 tokens, f32 moments:
    //   weights 388288·2 = 776576; master 388288·4 = 1553152; gradients (f32) 1553152;
    //   AdamW moments 2·4·388288 = 3106304;
    //   activations 128·(2032 + 3·2416) = 128·9280 = 1187840, + the backward's working set (one
    //     more layer, the largest: 128·2416 = 309248), + bf16 logits 128·1000·2 = 256000
    //     -> 1753088; total 8742272.
    let m = &v["memory"];
    for (k, want) in [
        ("params", 388288.0),
        ("weights", 776576.0),
        ("master", 1553152.0),
        ("gradients", 1553152.0),
        ("optimizer", 3106304.0),
        ("activations", 1753088.0),
        ("total", 8742272.0),
    ] {
        assert_eq!(m[k].as_f64().unwrap(), want, "1 GPU: {k}");
    }
    // Eight GPUs, tp=2, pp=2, ep=4, dp=2; micro-batch 2 of 64 tokens; bf16 moments; ZeRO-1; no
    // expert capacity factor.
    //   Stages of 2 layers. First: the dense layer, one MoE layer, the embedding:
    //     non-expert 41632 + 23712 + 64000 = 129344 (/tp 64672), experts 49152 (/ep 12288).
    //   Last: two MoE layers, head and final norm: non-expert 2·23712 + 64000 + 64 = 111488
    //     (/tp 55744), experts 98304 (/ep 24576) -> 80320 parameters.
    //   An expert-parallel MoE layer keeps per token: 1264 B before the MLP, router scores 32 B,
    //     per slot 16 B and the returned expert output 64·2 = 128 B (2 slots: 288 B); its rank's
    //     experts' rows — without a capacity factor every routed expert's one row per token, 8 —
    //     each input, gate, up, product (64 + 3·32)·2 = 320 B: 2560 B; shared 192 B -> 4336 B.
    //   Last stage: weights 80320·2 = 160640; master 55744·4/dp + 24576·4/(dp·tp/ep = 1)
    //     = 111488 + 98304 = 209792; gradients 80320·4 = 321280; moments (2·2 B) the same
    //     sharding as the master: 209792; activations one micro-batch (pp − 1 in flight) of its
    //     two MoE layers, 128·2·4336/tp = 555008, + the working set (one MoE layer,
    //     128·4336/tp = 277504) + logits 128·1000·2/tp = 128000 -> 960512; total 1862016.
    //   First stage: 64672+12288 = 76960 params: 153920 + (129344 + 49152 = 178496)
    //     + 307840 + 178496 + activations pp·128·(2032 + 4336)/tp = 815104 + the working set
    //     (the MoE layer's 277504) = 1092608 -> 1911360, larger: the first stage is reported.
    let v = json(&ok(&[
        "inspect",
        s,
        "--json",
        "--gpus",
        "8",
        "--gpu-memory",
        "80",
        "--parallel",
        "tp=2,pp=2,ep=4,dp=2",
        "--micro-batch",
        "2",
        "--seq-len",
        "64",
        "--moments",
        "bf16",
    ]));
    let m = &v["memory"];
    for (k, want) in [
        ("params", 76960.0),
        ("weights", 153920.0),
        ("master", 178496.0),
        ("gradients", 307840.0),
        ("optimizer", 178496.0),
        ("activations", 1092608.0),
        ("total", 1911360.0),
    ] {
        assert_eq!(m[k].as_f64().unwrap(), want, "8 GPUs: {k}");
    }
    // chinchilla --strict on a recipe with that layout reports the same bytes.
    let recipe = tmp("hand-recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "spec: {s}\nsteps: 2\ndata: {{source: builtin}}\nbatch: {{micro_batch: 2, seq_len: 64}}\n\
             optimizer: {{kind: adamw, lr: 1.0e-3, moments: bf16}}\nparallel: {{tp: 2, pp: 2, ep: 4, dp: 2, gpu_memory_gb: 80}}\n"
        ),
    )
    .unwrap();
    let o = dsv3c(&["chinchilla", recipe.to_str().unwrap(), "--strict", "--json"]);
    let c = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(c["memory"]["total"].as_f64().unwrap(), 1911360.0, "{c}");
    assert!(!o.status.success(), "2 steps are far below the Chinchilla band: --strict fails");
}

/// Runs `dsv3c ARGS`, which must fail without a panic; returns its flattened stderr.
fn fails(args: &[&str]) -> String {
    let o = dsv3c(args);
    let err = flat_stderr(&o);
    assert!(!o.status.success(), "dsv3c {args:?} succeeded");
    assert!(!err.contains("panicked"), "dsv3c {args:?}: {err}");
    err
}

#[test]
fn compile_eval_export_train_and_bench_refuse_bad_input_with_reasons() {
    // compile: a broken spec (file:line:column), a sequence above max_seq_len, batch 0, seq 0.
    let broken = tmp("compile-broken.yaml");
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/tiny.yaml")).unwrap();
    std::fs::write(&broken, tiny.replace("n_heads: 4", "n_heads: four")).unwrap();
    let line = tiny.lines().position(|l| l.contains("n_heads: 4")).unwrap() + 1;
    let err = fails(&["compile", broken.to_str().unwrap(), "--out", tmp("never").to_str().unwrap()]);
    assert!(err.contains(&format!("compile-broken.yaml:{line}:")), "{err}");
    let out = tmp("compile-never");
    let o = out.to_str().unwrap();
    let err = fails(&["compile", "spec/tiny.yaml", "--out", o, "--seq", "300"]);
    assert!(err.contains("sequence length 300 exceeds the spec's max_seq_len 256"), "{err}");
    let err = fails(&["compile", "spec/tiny.yaml", "--out", o, "--batch", "0", "--seq", "8"]);
    assert!(err.contains("must be at least 1") && err.contains("batch 0"), "{err}");
    let err = fails(&["compile", "spec/tiny.yaml", "--out", o, "--seq", "0"]);
    assert!(err.contains("must be at least 1") && err.contains("seq 0"), "{err}");

    // eval --checkpoint: a missing folder does not exist (nothing to delete); a run folder is
    // not a checkpoint and the message points at one of its checkpoints.
    let missing = tmp("no-such-checkpoint");
    let _ = std::fs::remove_dir_all(&missing);
    let err = fails(&["eval", "--checkpoint", missing.to_str().unwrap()]);
    assert!(err.contains("does not exist") && !err.contains("corrupt") && !err.contains("delete"), "{err}");
    let run = tmp("a-run-folder");
    std::fs::create_dir_all(run.join("checkpoints/step-000004")).unwrap();
    let err = fails(&["eval", "--checkpoint", run.to_str().unwrap()]);
    assert!(err.contains("is not a checkpoint") && err.contains("step-000004"), "{err}");
    assert!(!err.contains("corrupt") && !err.contains("delete"), "{err}");

    // export-hf: what DeepseekV3 has no equivalent for is refused at the command line.
    let err = fails(&["export-hf", "spec/swa-mla-small.yaml"]);
    assert!(err.contains("attention.swa") && err.contains("sliding-window"), "{err}");
    let dyt = tmp("dyt.yaml");
    std::fs::write(&dyt, tiny.replace("type: rmsnorm\n  eps: 1.0e-6", "type: dyt\n  alpha_init: 0.5")).unwrap();
    assert!(dsv3c_spec::load(&dyt).is_ok_and(|s| matches!(s.norm, dsv3c_spec::types::Norm::Dyt { .. })));
    let err = fails(&["export-hf", dyt.to_str().unwrap()]);
    assert!(err.contains("norm") && err.contains("DynamicTanh"), "{err}");

    // --steps 0 is refused, not run as one step (train) or silently raised to one (bench).
    let quick = "tests/fixtures/configs/tiny-quick.yaml";
    let err = fails(&["train", "--config", quick, "--steps", "0", "--out", tmp("steps0").to_str().unwrap()]);
    assert!(err.contains("--steps") && err.contains("0"), "{err}");
    assert!(!tmp("steps0").join("metrics.jsonl").exists());
    let err = fails(&["bench", "train", "--config", quick, "--steps", "0"]);
    assert!(err.contains("--steps"), "{err}");
}

#[test]
fn bench_train_times_steps_of_a_recipe() {
    let quick = "tests/fixtures/configs/tiny-quick.yaml";
    let v = json(
        ok(&["bench", "train", "--config", quick, "--steps", "2", "--hf-comparable", "--json"]).lines().last().unwrap(),
    );
    assert_eq!(v["steps"], 2, "{v}");
    assert_eq!(v["hf_comparable"], true);
    // tiny-quick: micro-batch 2 x 32 tokens x accumulation 2.
    assert_eq!(v["tokens_per_step"].as_f64().unwrap(), 128.0);
    let (median, rate) = (v["median_step_s"].as_f64().unwrap(), v["tokens_per_sec"].as_f64().unwrap());
    assert!(median > 0.0 && (rate * median - 128.0).abs() < 1e-6, "{v}");
    let text = ok(&["bench", "train", "--config", quick, "--steps", "1"]);
    assert!(text.contains("tiny: 128 tokens/step, median step") && text.contains("tok/s"), "{text}");
    assert!(v["profile"].is_null(), "no profile unless asked: {v}");

    // --profile: each op family's time per step, most first, the host's remainder last, summing to
    // the steps' time; the matrix products' rates.
    let v =
        json(ok(&["bench", "train", "--config", quick, "--steps", "2", "--profile", "--json"]).lines().last().unwrap());
    let rows = v["profile"].as_array().unwrap();
    let family = |name: &str| rows.iter().find(|r| r["family"] == name).unwrap_or_else(|| panic!("{name}: {v}"));
    // tiny-quick's step: two micro-batches, one AdamW launch.
    assert_eq!(family("adamw")["calls_per_step"], 1.0, "{v}");
    assert!(family("gemm")["calls_per_step"].as_f64().unwrap() >= 2.0, "{v}");
    assert!(family("gemm")["gflops"].as_f64().unwrap() > 0.0 && family("adamw")["gflops"].is_null(), "{v}");
    assert_eq!(rows.last().unwrap()["family"], "host: other", "{v}");
    let ms: Vec<f64> = rows[..rows.len() - 1].iter().map(|r| r["ms_per_step"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "sorted: {ms:?}");
    let percent: f64 = rows.iter().map(|r| r["percent"].as_f64().unwrap()).sum();
    assert!((percent - 100.0).abs() < 1e-6, "{percent}");
    let text = ok(&["bench", "train", "--config", quick, "--steps", "1", "--profile"]);
    assert!(text.contains("op family") && text.contains("GFLOP/s") && text.contains("attention_bwd"), "{text}");

    // bench gemm: the CPU GEMM's rate on a square product.
    let v = json(ok(&["bench", "gemm", "--n", "96", "--repeats", "2", "--json"]).lines().last().unwrap());
    assert_eq!(v["n"], 96, "{v}");
    let (median, rate) = (v["median_s"].as_f64().unwrap(), v["gflops"].as_f64().unwrap());
    assert!(median > 0.0 && (rate * 1e9 * median - 2.0 * 96f64.powi(3)).abs() < 1.0, "{v}");
    assert!(fails(&["bench", "gemm", "--n", "0"]).contains("--n"));
}
