#!/usr/bin/env bash
# The NVRTC gate: with only PyPI wheels (no GPU, no CUDA install), compile every generated kernel of every
# canonical spec for sm_90a with NVRTC, assemble each PTX with `ptxas -v`, fail on any error or spill, and
# print registers and shared memory per kernel. Wheels go to a venv under target/ (reused when present).
#   bash scripts/nvrtc-gate.sh [--markdown]   (--markdown: the table as a Markdown report on stdout, for bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH="${ARCH:-sm_90a}"
VENV="${DSV3C_CUDA_VENV:-target/cuda-wheels}"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "nvrtc gate: $PY not found (needed to install the CUDA wheels)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
echo "== installing nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12, nvidia-cuda-nvcc-cu12 into $VENV" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "nvidia-cuda-nvrtc-cu12>=12.4,<13" "nvidia-cuda-runtime-cu12>=12.4,<13" "nvidia-cuda-nvcc-cu12>=12.4,<13" >&2
NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.abspath(list(nvidia.__path__)[0]))')"
export DSV3C_NVRTC="$NV/cuda_nvrtc/lib"
export CUDA_INCLUDE_PATH="$NV/cuda_runtime/include"
export LD_LIBRARY_PATH="$NV/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== building dsv3c" >&2
cargo build --locked -q --bin dsv3c
exec "$VENV/bin/python" scripts/nvrtc_gate.py --dsv3c target/debug/dsv3c --ptxas "$NV/cuda_nvcc/bin/ptxas" --arch "$ARCH" "$@" spec/*.yaml
