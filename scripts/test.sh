#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, the NVRTC gate (every generated kernel
# of every canonical spec compiled for sm_90a from PyPI's CUDA wheels and assembled by ptxas with zero
# spills; needs python3 and PyPI, DSV3C_SKIP_NVRTC_GATE=1 skips it), and every test of the workspace.
# GPU tests detect the GPU at run time and skip without one.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
if [ "${DSV3C_SKIP_NVRTC_GATE:-0}" != 1 ]; then
  echo "== NVRTC gate"
  bash scripts/nvrtc-gate.sh
fi
echo "== cargo test"
# CI=true makes insta fail on a changed snapshot instead of writing it.
CI="${CI:-true}" cargo test --workspace --locked -q
