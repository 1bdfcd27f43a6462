#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, the NVRTC gate (every generated kernel
# of every canonical spec compiled for sm_90a from PyPI's CUDA wheels and assembled by ptxas with zero
# spills; needs python3 and PyPI, DSV3C_SKIP_NVRTC_GATE=1 skips it), and every test of the workspace.
# There are no GPU tests yet; kernels run in the PTX emulator (crate ptx/).
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
# The kernel property suite (codegen/tests/kernels.rs) compiles kernels with the gate's NVRTC wheel and
# runs them in the PTX emulator: required whenever the wheels are installed (always after the gate).
VENV="${DSV3C_CUDA_VENV:-target/cuda-wheels}"
if [ -x "$VENV/bin/python" ]; then
  NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.abspath(list(nvidia.__path__)[0]))')"
  export DSV3C_NVRTC="$NV/cuda_nvrtc/lib"
  export CUDA_INCLUDE_PATH="$NV/cuda_runtime/include"
  export DSV3C_REQUIRE_NVRTC=1
fi
echo "== cargo test"
# CI=true makes insta fail on a changed snapshot instead of writing it.
CI="${CI:-true}" cargo test --workspace --locked -q
