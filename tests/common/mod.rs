//! Helpers shared by the end-to-end tests: running the `dsv3c` binary from the project root.
//! (Each test binary uses some of them.)
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `dsv3c ARGS` in the project root.
pub fn dsv3c(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsv3c")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

/// Starts `dsv3c ARGS` in the project root, its stdout and stderr piped.
pub fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `dsv3c ARGS` in the project root, killed after `limit` (a hang fails the test instead of
/// stalling the suite); `None` when it ran out of time.
pub fn dsv3c_within(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = spawn(args);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

/// Runs `dsv3c ARGS`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = dsv3c(args);
    assert!(o.status.success(), "dsv3c {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// stderr with miette's line wrapping and box drawing undone, for matching messages.
pub fn flat_stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .split_whitespace()
        .filter(|w| !w.chars().all(|c| "│×╰─┬╭".contains(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Is NVRTC here for `what` (a test of the emulator or the GPU backend)? Without it the test says it
/// is skipped — unless `DSV3C_REQUIRE_NVRTC` is set (`scripts/test.sh`, CI), where its absence fails.
pub fn nvrtc_or_skip(what: &str) -> bool {
    match dsv3c_runtime::nvrtc::ensure_loaded() {
        Ok(()) => true,
        Err(e) => {
            assert!(std::env::var_os("DSV3C_REQUIRE_NVRTC").is_none(), "{what} needs NVRTC: {e}");
            eprintln!("SKIPPED: {what} needs NVRTC ({e})");
            false
        }
    }
}
