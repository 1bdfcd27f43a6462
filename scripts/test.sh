#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, and every test of the
# workspace. Needs only a Rust toolchain; GPU tests detect the GPU at run time and skip without one.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
echo "== cargo test"
# CI=true makes insta fail on a changed snapshot instead of writing it.
CI="${CI:-true}" cargo test --workspace --locked -q
