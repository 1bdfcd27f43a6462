//! Helpers shared by the end-to-end tests: running the `dsv3c` binary from the project root.
//! (Each test binary uses some of them.)
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `dsv3c ARGS` in the project root.
pub fn dsv3c(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsv3c")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
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
