//! The `dsv3c sim run` sanitizer against deliberately broken CUDA kernels (tests/sim/broken/): one
//! bug per check (out-of-bounds, misaligned, race, uninitialized, deadlock, divergence, member-mask),
//! each next to a correct twin built from the same source with `-DFIXED` (plus one more twin,
//! member_mask_syncwarp_split_ok: both half-warps at `__syncwarp()`, from two sites). The PTX, the
//! inputs and cases.json are written by tests/sim/broken/make.py, which finds the offending
//! instruction's PTX line by searching the generated PTX, not by asking the emulator.
//!
//! A broken case must exit non-zero and print, on stderr, a finding `CHECK: ENTRY at PTX line N` for
//! its check with N one of the case's lines; a twin must exit 0 and print no finding. Every run has
//! a 60 s limit (the emulator must report a deadlock, never hang).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const CHECKS: [&str; 7] =
    ["out-of-bounds", "misaligned", "race", "uninitialized", "deadlock", "divergence", "member-mask"];
const LIMIT: Duration = Duration::from_secs(60);

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/broken")
}

fn cases() -> Vec<Value> {
    let path = folder().join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn case(name: &str) -> Value {
    cases().into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name} in cases.json"))
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("cases.json: {key} is not a string in {v}")).to_string()
}

/// A fresh scratch folder for one run's outputs and captured streams (removed when the case passes).
fn scratch(case: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("dsv3c-sanitizer-{case}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `dsv3c sim run` arguments of a case: `in:` paths relative to tests/sim/broken, `{tmp}` the
/// scratch folder.
fn command_line(spec: &Value, tmp: &Path) -> Vec<String> {
    let dir = folder();
    let tmp = tmp.to_str().unwrap();
    let mut args =
        vec!["sim".to_string(), "run".to_string(), dir.join(text(spec, "ptx")).to_str().unwrap().to_string()];
    for key in ["entry", "grid", "block"] {
        args.push(format!("--{key}"));
        args.push(text(spec, key));
    }
    let smem = spec["smem"].as_u64().unwrap_or(0);
    if smem > 0 {
        args.push("--smem".to_string());
        args.push(smem.to_string());
    }
    for arg in spec["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap().replace("{tmp}", tmp);
        let arg = match arg.strip_prefix("in:") {
            Some(p) => format!("in:{}", dir.join(p).to_str().unwrap()),
            None => arg,
        };
        args.push("--arg".to_string());
        args.push(arg);
    }
    args
}

/// How one run ended: its exit status (None when it was killed at the time limit) and its streams.
struct Run {
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

/// Spawns `dsv3c ARGS` with stdout and stderr going to files in `tmp` (so a chatty run cannot block
/// on a full pipe), polls it, and kills it at LIMIT.
fn run_limited(args: &[String], tmp: &Path) -> Run {
    let (out_path, err_path) = (tmp.join("stdout.txt"), tmp.join("stderr.txt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() >= LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Run { status, elapsed: start.elapsed(), stdout: read(&out_path), stderr: read(&err_path) }
}

/// The sanitizer findings on stderr: (check, entry, PTX line) of each line
/// `  CHECK: ENTRY at PTX line N, ...`.
fn findings(stderr: &str) -> Vec<(String, String, Option<u64>)> {
    let mut found = Vec::new();
    for line in stderr.lines() {
        let line = line.trim_start();
        let Some((check, rest)) = line.split_once(": ") else { continue };
        if !CHECKS.contains(&check) {
            continue;
        }
        let (entry, at) = rest.split_once(' ').unwrap_or((rest, ""));
        let number =
            at.strip_prefix("at PTX line ").map(|s| s.chars().take_while(char::is_ascii_digit).collect::<String>());
        found.push((check.to_string(), entry.to_string(), number.and_then(|n| n.parse().ok())));
    }
    found
}

fn check_case(name: &str) {
    let spec = case(name);
    let tmp = scratch(name);
    let args = command_line(&spec, &tmp);
    let run = run_limited(&args, &tmp);
    let entry = text(&spec, "entry");
    let lines: Vec<u64> = spec["lines"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap()).collect();
    let expected = spec["check"].as_str();
    let report = format!(
        "case {name} ({}): {}\ndsv3c {}\nexit: {} after {:.1} s\n--- stdout\n{}--- stderr\n{}",
        text(&spec, "why"),
        match expected {
            Some(c) => format!("expected a `{c}` finding at PTX line {lines:?}"),
            None => "expected a clean run".to_string(),
        },
        args.join(" "),
        match run.status {
            Some(s) => format!("{s}"),
            None => format!("none: killed at the {} s limit (hang)", LIMIT.as_secs()),
        },
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr,
    );
    let status = run.status.unwrap_or_else(|| panic!("dsv3c did not finish\n{report}"));
    let found = findings(&run.stderr);
    match expected {
        Some(check) => {
            assert!(!status.success(), "a broken kernel ran clean\n{report}");
            assert!(found.iter().any(|(c, _, _)| c == check), "no `{check}` finding (findings: {found:?})\n{report}");
            assert!(
                found.iter().any(|(c, e, n)| c == check && *e == entry && n.is_some_and(|n| lines.contains(&n))),
                "no `{check}: {entry} at PTX line N` with N in {lines:?} (findings: {found:?})\n{report}"
            );
        }
        None => {
            assert!(found.is_empty(), "findings on a correct kernel: {found:?}\n{report}");
            assert!(status.success(), "a correct kernel failed\n{report}");
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name));
            }
        )*

        /// The tests above are exactly the cases of cases.json, and every check has a broken case.
        #[test]
        fn cases_json_lists_these_cases() {
            let mut listed: Vec<String> = cases().iter().map(|c| text(c, "name")).collect();
            let mut here: Vec<String> = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            here.sort();
            assert_eq!(listed, here, "tests/sim_sanitizer.rs and tests/sim/broken/cases.json disagree");
            for check in CHECKS {
                assert!(cases().iter().any(|c| c["check"] == check), "no broken case for `{check}`");
            }
            for c in cases() {
                let twin = c["check"].is_null();
                assert_eq!(twin, text(&c, "name").ends_with("_ok"), "{c}");
                assert_eq!(twin, c["lines"].as_array().unwrap().is_empty(), "{c}");
            }
        }
    };
}

cases!(
    oob_global_store,
    oob_global_store_ok,
    oob_shared_read,
    oob_shared_read_ok,
    race_shared,
    race_shared_ok,
    uninit_shared,
    uninit_shared_ok,
    uninit_register,
    uninit_register_ok,
    deadlock_spin,
    deadlock_spin_ok,
    deadlock_barrier_id,
    deadlock_barrier_id_ok,
    divergence_bar,
    divergence_bar_ok,
    misaligned_load,
    misaligned_load_ok,
    member_mask_shfl,
    member_mask_shfl_ok,
    member_mask_syncwarp,
    member_mask_syncwarp_ok,
    member_mask_syncwarp_split_ok,
);
