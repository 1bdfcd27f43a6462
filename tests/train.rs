//! End-to-end tests of `dsv3c train`: learning, exact resume, checkpoint integrity, refusals.

mod common;

use std::path::{Path, PathBuf};

use common::{dsv3c, flat_stderr, ok};

const QUICK: &str = "tests/fixtures/configs/tiny-quick.yaml";

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["loss"].is_number())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_one_exactly() {
    let (a, b) = (fresh("train-a"), fresh("train-b"));
    let stdout = ok(&["train", "--config", QUICK, "--out", a.to_str().unwrap()]);
    assert!(
        stdout.lines().any(|l| l.starts_with("step 12/12 | loss ") && l.contains(" tok/s | grad-norm ")),
        "{stdout}"
    );
    ok(&["train", "--config", QUICK, "--steps", "8", "--out", b.to_str().unwrap()]);
    ok(&["train", "--config", QUICK, "--out", b.to_str().unwrap(), "--resume"]);
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 12);
    assert_eq!(la, lb, "resumed losses differ");
    // keep: 2 — only the two newest checkpoints remain.
    let names: Vec<String> = std::fs::read_dir(a.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The model learns even in 12 short steps.
    assert!(la[11].1 < la[0].1 - 1.0, "{la:?}");
    // Metrics carry the balance statistics of every MoE layer (2 main + 1 MTP).
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(a.join("metrics.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    assert_eq!(first["moe"].as_array().unwrap().len(), 3);
    for k in ["lr", "tokens", "tokens_per_sec", "grad_norm", "mtp_loss"] {
        assert!(first[k].is_number(), "{k} missing: {first}");
    }
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() {
    let (a, b, c) = (fresh("seed-a"), fresh("seed-b"), fresh("seed-c"));
    ok(&["train", "--config", QUICK, "--steps", "2", "--out", a.to_str().unwrap()]);
    ok(&["train", "--config", QUICK, "--steps", "2", "--out", b.to_str().unwrap()]);
    ok(&["train", "--config", QUICK, "--steps", "2", "--out", c.to_str().unwrap(), "--seed", "6"]);
    assert_eq!(losses(&a), losses(&b));
    assert_ne!(losses(&a), losses(&c));
}

#[test]
fn corrupt_checkpoints_and_half_written_ones() {
    let d = fresh("train-corrupt");
    ok(&["train", "--config", QUICK, "--steps", "4", "--out", d.to_str().unwrap()]);
    // A half-written checkpoint from a killed run is ignored.
    std::fs::create_dir_all(d.join("checkpoints/step-000009.partial")).unwrap();
    std::fs::write(d.join("checkpoints/step-000009.partial/model.safetensors"), b"half").unwrap();
    // The killed run had also logged a step past its last checkpoint; the resumed run logs it anew.
    let mut m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    m.push_str("{\"step\": 5, \"loss\": 99.0}\n");
    std::fs::write(d.join("metrics.jsonl"), m).unwrap();
    ok(&["train", "--config", QUICK, "--steps", "5", "--out", d.to_str().unwrap(), "--resume"]);
    let l = losses(&d);
    assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_ne!(l[4].1, 99.0);
    // A corrupted one is refused, naming the file.
    let model = d.join("checkpoints/step-000005/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();
    let o = dsv3c(&["train", "--config", QUICK, "--steps", "6", "--out", d.to_str().unwrap(), "--resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("corrupt") && err.contains("model.safetensors"), "{err}");
}

#[test]
fn refusals_are_clear() {
    let d = fresh("train-refuse");
    ok(&["train", "--config", QUICK, "--steps", "1", "--out", d.to_str().unwrap()]);
    let again = dsv3c(&["train", "--config", QUICK, "--steps", "1", "--out", d.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let none = fresh("train-none");
    let o = dsv3c(&["train", "--config", QUICK, "--out", none.to_str().unwrap(), "--resume"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no complete checkpoint"));
    if dsv3c_runtime::device::cuda_available().is_err() {
        // Without a GPU: one clear error before any work, and `auto` takes the CPU and says so.
        let out = fresh("train-cuda");
        let o = dsv3c(&["train", "--config", QUICK, "--device", "cuda", "--out", out.to_str().unwrap()]);
        let err = flat_stderr(&o);
        assert!(!o.status.success() && err.contains("--device cuda: no CUDA"), "{err}");
        assert!(!err.contains("panicked") && !out.exists(), "{err}");
        let o = dsv3c(&["train", "--config", QUICK, "--steps", "1", "--out", fresh("train-auto").to_str().unwrap()]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("device: cpu (auto; no CUDA"));
    }
    let bad = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-recipe.yaml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(QUICK)).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml");
    std::fs::write(
        &bad,
        text.replace("../../../spec/tiny.yaml", spec.to_str().unwrap()).replace("lr: 1.0e-2", "lr: -1"),
    )
    .unwrap();
    let o = dsv3c(&["train", "--config", bad.to_str().unwrap(), "--out", fresh("train-bad").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    let line = text.lines().position(|l| l.contains("lr: 1.0e-2")).unwrap() + 1;
    assert!(!o.status.success() && err.contains(&format!("bad-recipe.yaml:{line}:")), "{err}");
}

#[test]
fn a_checkpoint_evaluates_and_exports_to_a_hugging_face_folder() {
    let d = fresh("train-export");
    ok(&["train", "--config", QUICK, "--steps", "2", "--out", d.to_str().unwrap()]);
    let ckpt = d.join("checkpoints/step-000002");
    let v: serde_json::Value =
        serde_json::from_str(ok(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--json"]).lines().last().unwrap())
            .unwrap();
    assert!(v["loss"].as_f64().unwrap() > 0.0 && v["perplexity"].as_f64().unwrap() > 1.0, "{v}");
    assert_eq!(v["step"], 2);
    let hf = fresh("train-export-hf");
    ok(&["export-hf", ckpt.to_str().unwrap(), "-o", hf.to_str().unwrap()]);
    assert!(hf.join("config.json").exists() && hf.join("model.safetensors").exists());
    // The exported folder is the same model: its loss under the HF loader (config.json read back
    // as a spec, tensors by HF name) equals the checkpoint's on the same tokens. A transposed
    // square matrix or swapped gate/up projections in the export would change it.
    let (micro, seq) = (2, 32); // tiny-quick's batch
    let ids: Vec<u32> = (0..micro * seq).map(|i| (i as u32 * 7919 + 13) % 50_000).collect();
    let shard = d.join("probe.bin");
    dsv3c_runtime::data::shard::write(&shard, &ids).unwrap();
    let last = |out: String| -> serde_json::Value { serde_json::from_str(out.lines().last().unwrap()).unwrap() };
    let native =
        last(ok(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--data", shard.to_str().unwrap(), "--json"]));
    assert_eq!(native["tokens"], micro * seq);
    let toks = hf.join("tokens.json");
    let rows: Vec<&[u32]> = ids.chunks(seq).collect();
    std::fs::write(&toks, serde_json::to_string(&rows).unwrap()).unwrap();
    let out = last(ok(&["eval", "--hf", hf.to_str().unwrap(), "--tokens", toks.to_str().unwrap(), "--json"]));
    let (a, b) = (native["loss"].as_f64().unwrap(), out["loss"].as_f64().unwrap());
    // The same f32 CPU computation on the same weights: equal to rounding. (Two training steps
    // from init leave the model near-uniform, so a swapped gate/up moves the loss by only 5e-5.)
    assert!((a - b).abs() <= 1e-6 * a, "checkpoint loss {a}, exported HF folder's {b}");
    assert_eq!(out["mtp_losses"].as_array().unwrap().len(), 1, "MTP weights travel with the export");
}

#[test]
fn a_hugging_face_tokenizer_json_feeds_the_built_in_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(QUICK)).unwrap();
    let recipe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hf-tokenizer.yaml");
    let tokenizer = root.join("tests/fixtures/tokenizer/tokenizer.json");
    std::fs::write(
        &recipe,
        text.replace("../../../spec/tiny.yaml", root.join("spec/tiny.yaml").to_str().unwrap())
            .replace("source: builtin", &format!("source: builtin\n  tokenizer: {}", tokenizer.display())),
    )
    .unwrap();
    let d = fresh("train-hf-tokenizer");
    let o = dsv3c(&["train", "--config", recipe.to_str().unwrap(), "--steps", "2", "--out", d.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(losses(&d).len(), 2);
    // The corpus the run trained on is the tokenizer's ids (its 600-id vocabulary, not GPT-2's):
    // the cache train wrote holds, file by file, `// path\n` + text encoded, then end-of-text.
    // (The tokenizer's ids themselves are checked against Python's `tokenizers` in runtime.)
    let tok = dsv3c_runtime::data::tokenizer::Tokenizer::by_name(tokenizer.to_str().unwrap(), Path::new("/")).unwrap();
    let key = dsv3c_runtime::data::corpus::tokenizer_key(tokenizer.to_str().unwrap(), Path::new("/"));
    let cache = root.join("runs/cache");
    let (tokens, files) = dsv3c_runtime::data::corpus::load(root, &tok, &key, &cache).unwrap();
    let printed = format!("{files} files, {} tokens (", tokens.len());
    assert!(err.contains(&printed), "train read another corpus than {printed}: {err}");
    assert!(tokens.iter().all(|&t| t < 600), "ids beyond the tokenizer's vocabulary");
    let first = &dsv3c_runtime::data::corpus::files(root)[0];
    let rel = first.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let mut want = tok.encode(&format!("// {rel}\n{}", std::fs::read_to_string(first).unwrap()));
    want.extend(tok.eot());
    assert_eq!(&tokens[..want.len()], &want[..], "the first document's ids");
}

/// A spec file: tiny with another vocabulary size.
fn tiny_with_vocab(name: &str, vocab: u64) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/tiny.yaml")).unwrap();
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&p, text.replace("vocab_size: 50304", &format!("vocab_size: {vocab}"))).unwrap();
    p
}

#[test]
fn a_run_trains_from_prepared_shards_and_evaluates_on_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = fresh("train-shards");
    std::fs::create_dir_all(&d).unwrap();
    // Prepare shards with the tokenizer.json fixture (what every GPU recipe trains from).
    let docs =
        dsv3c_data::synth::corpus(dsv3c_data::synth::Mix { distinct: 60, exact: 0, near: 0, junk: 0, edit: 0.0 }, 21);
    std::fs::write(d.join("docs.jsonl"), dsv3c_data::synth::jsonl(&docs)).unwrap();
    let tokenizer = root.join("tests/fixtures/tokenizer/tokenizer.json");
    std::fs::write(d.join("data.yaml"), format!("tokenizer: {}\nvalidation_fraction: 0.2\n", tokenizer.display()))
        .unwrap();
    let data = d.join("data");
    ok(&[
        "data",
        "prepare",
        "--input",
        d.join("docs.jsonl").to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--config",
        d.join("data.yaml").to_str().unwrap(),
    ]);
    let (train_shard, val_shard) = (data.join("train-000000.bin"), data.join("val-000000.bin"));
    let train_ids = dsv3c_runtime::data::shard::read(&train_shard).unwrap();
    assert!(train_ids.iter().all(|&t| t < 600) && train_ids.len() > 2000);
    // The first kept document's ids, end-of-text after it.
    let tok = dsv3c_runtime::data::tokenizer::Tokenizer::by_name(tokenizer.to_str().unwrap(), Path::new("/")).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(data.join("documents.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    let mut want = tok.encode(first["text"].as_str().unwrap());
    want.extend(tok.eot());
    let val_ids = dsv3c_runtime::data::shard::read(&val_shard).unwrap();
    assert!(train_ids.starts_with(&want) || val_ids.starts_with(&want), "the shards hold the tokenizer's ids");

    let recipe = d.join("recipe.yaml");
    let write_recipe = |spec: &Path, shard: &Path| {
        std::fs::write(
            &recipe,
            format!(
                "spec: {}\nsteps: 3\nseed: 2\ndata: {{source: shards, shards: [{}], validation_fraction: 0.1}}\n\
                 batch: {{micro_batch: 2, seq_len: 32}}\noptimizer: {{kind: adamw, lr: 1.0e-2}}\n\
                 checkpoint: {{every: 3}}\n",
                spec.display(),
                shard.display()
            ),
        )
        .unwrap()
    };
    // tiny with a vocabulary just above the tokenizer's 600 ids (fast: small logits).
    let spec = tiny_with_vocab("tiny-vocab-640.yaml", 640);
    write_recipe(&spec, &train_shard);
    let out = d.join("run");
    ok(&["train", "--config", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(losses(&out).len(), 3);
    let ckpt = out.join("checkpoints/step-000003");
    let v: serde_json::Value = serde_json::from_str(
        ok(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--data", val_shard.to_str().unwrap(), "--json"])
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["tokens"].as_u64().unwrap() as usize, val_ids.len() / 32 / 2 * 2 * 32, "{v}");
    assert!(v["loss"].as_f64().unwrap() < (640f64).ln(), "{v}");

    // Ids the spec's vocabulary cannot hold: refused by train and by eval.
    let bad = d.join("bad.bin");
    let mut ids = train_ids.clone();
    ids[77] = 60_000;
    dsv3c_runtime::data::shard::write(&bad, &ids).unwrap();
    let o = dsv3c(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--data", bad.to_str().unwrap()]);
    let err = flat_stderr(&o);
    let named = "bad.bin: token 77 (byte 186) is id 60000, outside the spec's vocab_size 640";
    assert!(!o.status.success() && err.contains(named), "{err}");
    write_recipe(&spec, &bad);
    let o = dsv3c(&["train", "--config", recipe.to_str().unwrap(), "--out", fresh("train-bad-ids").to_str().unwrap()]);
    let err = flat_stderr(&o);
    assert!(!o.status.success() && err.contains(named), "{err}");
    // A tokenizer with more ids than the spec's vocabulary is refused before any work.
    let small = tiny_with_vocab("tiny-vocab-512.yaml", 512);
    let text = std::fs::read_to_string(root.join(QUICK)).unwrap();
    std::fs::write(
        &recipe,
        text.replace("../../../spec/tiny.yaml", small.to_str().unwrap())
            .replace("source: builtin", &format!("source: builtin\n  tokenizer: {}", tokenizer.display())),
    )
    .unwrap();
    let o =
        dsv3c(&["train", "--config", recipe.to_str().unwrap(), "--out", fresh("train-small-vocab").to_str().unwrap()]);
    let err = flat_stderr(&o);
    assert!(!o.status.success() && err.contains("600 ids") && err.contains("vocab_size is 512"), "{err}");
}

/// The GPU backend over the PTX emulator trains like the CPU: three f32 steps of `tiny` at 1 x 32
/// whose losses and gradient norms agree within 1e-4 relative, and checkpoints that cross between
/// the two (a sim checkpoint resumed on the CPU and a CPU one on sim give the same next step).
/// `configs/tiny.yaml` with the 600-id tokenizer fixture and a 640-token vocabulary: GPT-2's
/// 50304-token LM head would take the emulator's time.
#[test]
fn training_on_the_emulator_follows_the_cpu() {
    if !common::nvrtc_or_skip("--device sim") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = tiny_with_vocab("tiny-vocab-640-sim.yaml", 640);
    let tokenizer = root.join("tests/fixtures/tokenizer/tokenizer.json");
    let recipe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-sim.yaml");
    let text = std::fs::read_to_string(root.join("configs/tiny.yaml")).unwrap();
    let text = text
        .replace("../spec/tiny.yaml", spec.to_str().unwrap())
        .replace("tokenizer: gpt2", &format!("tokenizer: {}", tokenizer.display()));
    std::fs::write(&recipe, text).unwrap();
    let run = |device: &str, dir: &Path, steps: &str, resume: bool| {
        let mut args = vec!["train", "--config", recipe.to_str().unwrap(), "--device", device, "--steps", steps];
        args.extend(["--micro-batch", "1", "--seq-len", "32", "--validation-batches", "1"]);
        args.extend(["--out", dir.to_str().unwrap()]);
        if resume {
            args.push("--resume");
        }
        let o = dsv3c(&args);
        assert!(o.status.success(), "dsv3c {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let metrics = |dir: &Path| -> Vec<(f64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["loss"].is_number())
            .map(|v| (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap()))
            .collect()
    };
    let close = |a: &[(f64, f64)], b: &[(f64, f64)]| {
        assert_eq!(a.len(), b.len());
        for ((la, ga), (lb, gb)) in a.iter().zip(b) {
            assert!((la - lb).abs() <= 1e-4 * lb.abs(), "loss {la} vs {lb}");
            assert!((ga - gb).abs() <= 1e-4 * gb.abs(), "grad norm {ga} vs {gb}");
        }
    };
    let (sim, cpu) = (fresh("train-sim"), fresh("train-sim-cpu"));
    let said = run("sim", &sim, "3", false);
    assert!(said.contains("device: sim, PTX emulator") && said.contains("kernels: 90 for sm_90a"), "{said}");
    run("cpu", &cpu, "3", false);
    close(&metrics(&sim), &metrics(&cpu));
    // Step 4 from the other backend's checkpoint.
    let (sim_then_cpu, cpu_then_sim) = (fresh("train-sim-then-cpu"), fresh("train-cpu-then-sim"));
    for (from, to) in [(&sim, &sim_then_cpu), (&cpu, &cpu_then_sim)] {
        std::fs::create_dir_all(to.join("checkpoints")).unwrap();
        let ckpt = from.join("checkpoints/step-000003");
        copy_dir(&ckpt, &to.join("checkpoints/step-000003"));
    }
    run("cpu", &sim_then_cpu, "4", true);
    run("sim", &cpu_then_sim, "4", true);
    close(&metrics(&sim_then_cpu), &metrics(&cpu_then_sim));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
