//! End-to-end tests of a run that survives: a diverging recipe stops after `guard.max_skipped`
//! skipped steps naming the first non-finite op, with no non-finite checkpoint; SIGTERM writes a
//! checkpoint at the step boundary and `--resume` reproduces the uninterrupted losses exactly; a
//! failed checkpoint write (a file-size limit standing in for a full disk) keeps the earlier ones;
//! `dsv3c plot` draws a run.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dsv3c, flat_stderr, ok};

const QUICK: &str = "tests/fixtures/configs/tiny-quick.yaml";

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (step, loss, grad norm) of each trained step.
fn losses(dir: &Path) -> Vec<(u64, f64, f64)> {
    records(dir)
        .iter()
        .filter(|v| v["loss"].is_number())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap()))
        .collect()
}

/// tiny-quick with another learning rate, as a recipe in `dir`.
fn recipe_with_lr(dir: &Path, lr: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(QUICK)).unwrap();
    let spec = root.join("spec/tiny.yaml");
    let text = text
        .replace("lr: 1.0e-2", &format!("lr: {lr}"))
        .replace("spec: ../../../spec/tiny.yaml", &format!("spec: {}", spec.display()));
    assert!(text.contains(&format!("lr: {lr}")));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every tensor of every checkpoint of a run is finite.
fn checkpoints_finite(dir: &Path) -> usize {
    let all = dsv3c_runtime::train::checkpoint::list(dir);
    for (step, path) in &all {
        let l = dsv3c_runtime::train::checkpoint::load(path).unwrap();
        for (name, t) in l.model.iter().chain(&l.optimizer.tensors) {
            assert!(t.data.iter().all(|v| v.is_finite()), "checkpoint {step}: {name} is not finite");
        }
    }
    all.len()
}

#[test]
fn a_diverging_run_stops_after_three_skipped_steps_naming_the_first_non_finite_op() {
    let dir = fresh("robust-diverge");
    let recipe = recipe_with_lr(&dir, "1.0e+4");
    let out = dir.join("run");
    let (c, o) = (recipe.to_str().unwrap(), out.to_str().unwrap());
    let args =
        ["train", "--config", c, "--out", o, "--steps", "12", "--checkpoint-every", "1", "--validation-batches", "0"];
    let r = dsv3c(&args);
    let err = flat_stderr(&r);
    assert!(!r.status.success(), "a diverging run must fail:\n{err}");
    assert!(err.contains("3 steps in a row were skipped"), "{err}");
    assert!(err.contains("the first non-finite value:") && err.contains("wrote"), "{err}");
    let skipped: Vec<u64> =
        records(&out).iter().filter(|v| v["skipped"].is_object()).map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(err.contains(&format!("step {}:", skipped[2])), "{err}");
    // Checkpoints of the applied steps only, all finite; the newest resumes.
    let n = checkpoints_finite(&out);
    assert!(n >= 1);
    assert!(dsv3c_runtime::train::checkpoint::list(&out).iter().all(|(s, _)| *s < skipped[0]));
    let r = dsv3c(&[&args[..], &["--resume"]].concat());
    let again = flat_stderr(&r);
    assert!(again.contains("resuming from") && again.contains("steps in a row were skipped"), "{again}");
}

/// Starts `dsv3c train ARGS`, reads its log lines, and sends `signals` once the line `step N/` is out.
fn signalled(args: &[&str], at_step: u64, signals: &[&str]) -> (Option<i32>, String) {
    let mut child = common::spawn(args);
    let stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(&format!("step {at_step}/")) {
            for s in signals {
                let k = Command::new("kill").args([&format!("-{s}"), &child.id().to_string()]).status().unwrap();
                assert!(k.success());
            }
        }
    }
    let o = child.wait_with_output().unwrap();
    seen.push_str(&String::from_utf8_lossy(&o.stdout));
    (o.status.code(), format!("{seen}{}", String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn sigterm_checkpoints_at_the_step_boundary_and_resume_reproduces_the_losses_exactly() {
    let (a, b) = (fresh("robust-term-a"), fresh("robust-term-b"));
    let base = ["train", "--config", QUICK, "--steps", "8", "--validation-batches", "0", "--out"];
    ok(&[&base[..], &[a.to_str().unwrap()]].concat());
    let args = [&base[..], &[b.to_str().unwrap()]].concat();
    let (code, log) = signalled(&args, 2, &["TERM"]);
    assert_eq!(code, Some(75), "a stopped run exits 75:\n{log}");
    assert!(log.contains("stopped on a signal after step"), "{log}");
    let stopped = dsv3c_runtime::train::checkpoint::list(&b).pop().expect("a checkpoint").0;
    assert!((2..8).contains(&stopped), "checkpoint at step {stopped}");
    assert_eq!(losses(&b).last().unwrap().0, stopped, "the last logged step is the checkpointed one");
    ok(&[&args[..], &["--resume"]].concat());
    assert_eq!(losses(&b), losses(&a), "the resumed run's losses and norms, bit for bit");

    // A second signal exits at once, the last complete checkpoint intact.
    let c = fresh("robust-term-c");
    let args = [
        "train",
        "--config",
        QUICK,
        "--steps",
        "30",
        "--checkpoint-every",
        "1",
        "--validation-batches",
        "0",
        "--out",
        c.to_str().unwrap(),
    ];
    let (code, log) = signalled(&args, 3, &["TERM", "INT"]);
    assert!(code == Some(128 + 15) || code == Some(128 + 2), "a second signal exits at once: {code:?}\n{log}");
    assert!(!log.contains("stopped on a signal"), "{log}");
    assert!(checkpoints_finite(&c) >= 1);
    let next = (dsv3c_runtime::train::checkpoint::list(&c).pop().unwrap().0 + 1).to_string();
    let resume = [
        "train",
        "--config",
        QUICK,
        "--steps",
        &next,
        "--validation-batches",
        "0",
        "--out",
        c.to_str().unwrap(),
        "--resume",
    ];
    ok(&resume);
}

#[test]
fn a_failed_checkpoint_write_keeps_the_earlier_ones() {
    let dir = fresh("robust-disk");
    let o = dir.to_str().unwrap();
    ok(&[
        "train",
        "--config",
        QUICK,
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--validation-batches",
        "0",
        "--out",
        o,
    ]);
    let before = dsv3c_runtime::train::checkpoint::list(&dir);
    assert_eq!(before.len(), 2);
    // Files may not grow past 8 MiB (model.safetensors is 27 MB): the write fails with EFBIG, as it
    // would with ENOSPC on a full disk. SIGXFSZ is ignored so that the write reports the error.
    let cmd = format!(
        "ulimit -f 8192; trap '' XFSZ; exec '{}' train --config {QUICK} --steps 4 --checkpoint-every 1 --validation-batches 0 --out '{o}' --resume",
        env!("CARGO_BIN_EXE_dsv3c")
    );
    let r = Command::new("bash").args(["-c", &cmd]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let err = flat_stderr(&r);
    assert!(!r.status.success(), "{err}");
    assert!(err.contains("checkpoint at step 3") && err.contains("cannot write"), "{err}");
    assert!(err.contains("model.safetensors"), "the failed file is named: {err}");
    assert_eq!(dsv3c_runtime::train::checkpoint::list(&dir), before, "the earlier checkpoints are kept");
    assert_eq!(checkpoints_finite(&dir), 2);
    let left: Vec<_> = std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 2, "no partial folder is left: {left:?}");
    ok(&["train", "--config", QUICK, "--steps", "3", "--validation-batches", "0", "--out", o, "--resume"]);
}

/// The width and height of a PNG, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn train_writes_a_plot_and_dsv3c_plot_draws_every_series() {
    let dir = fresh("robust-plot");
    let o = dir.to_str().unwrap();
    ok(&["train", "--config", QUICK, "--steps", "4", "--validation-batches", "2", "--out", o]);
    let v = records(&dir);
    assert!(v.iter().any(|r| r["validation_loss"].is_number()), "the validation loss is recorded");
    // Seven panels (loss with MTP and validation, lr, grad norm, tokens/s, three MoE) in three columns.
    assert_eq!(png_size(&dir.join("plot.png")), (3 * 560, 3 * 420 + 50));
    let png = dir.join("again.png");
    let printed = ok(&["plot", o, "-o", png.to_str().unwrap()]);
    assert!(printed.contains("again.png"));
    assert_eq!(std::fs::read(&png).unwrap(), std::fs::read(dir.join("plot.png")).unwrap(), "deterministic");
    let r = dsv3c(&["plot", dir.join("checkpoints").to_str().unwrap()]);
    assert!(!r.status.success() && flat_stderr(&r).contains("metrics.jsonl"));
}

/// A job of in-process ranks stops as one: a signal reaches every rank at the same step boundary
/// (the ranks agree on it), rank 0 writes the checkpoint, and the run resumes on one device — and
/// the other way — with the single-device run's losses.
#[test]
fn sigterm_stops_a_data_parallel_job_at_one_step_and_it_resumes_on_one_device() {
    let dir = fresh("robust-dp");
    // tiny-quick's global batch (2 sequences × 2 micro-batches) as 2 ranks × 2 sequences.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(QUICK)).unwrap();
    let text = text
        .replace("accumulation: 2", "accumulation: 1")
        .replace("spec: ../../../spec/tiny.yaml", &format!("spec: {}", root.join("spec/tiny.yaml").display()));
    std::fs::create_dir_all(&dir).unwrap();
    let dp2 = dir.join("dp2.yaml");
    std::fs::write(&dp2, format!("{text}parallel: {{dp: 2}}\n")).unwrap();
    let (one, job) = (dir.join("one"), dir.join("job"));
    let base = ["train", "--steps", "8", "--validation-batches", "0", "--out"];
    ok(&[&base[..], &[one.to_str().unwrap(), "--config", QUICK]].concat());
    let args = [&base[..], &[job.to_str().unwrap(), "--config", dp2.to_str().unwrap(), "--nproc", "2"]].concat();
    let (code, log) = signalled(&args, 2, &["TERM"]);
    assert_eq!(code, Some(75), "a stopped job exits 75:\n{log}");
    let stopped = dsv3c_runtime::train::checkpoint::list(&job).pop().expect("a checkpoint").0;
    assert!((2..8).contains(&stopped), "checkpoint at step {stopped}");
    // Resumed on one device, it continues the single-device run.
    ok(&[
        "train",
        "--steps",
        "8",
        "--validation-batches",
        "0",
        "--out",
        job.to_str().unwrap(),
        "--config",
        QUICK,
        "--resume",
    ]);
    let (a, b) = (losses(&one), losses(&job));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() <= 1e-5 * x.1, "step {}: loss {} on one device, {} from the job", x.0, x.1, y.1);
    }
}
