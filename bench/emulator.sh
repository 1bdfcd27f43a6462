#!/usr/bin/env bash
# The PTX emulator's speed and its H100 estimates for a spec's training step (or, with --decode, its
# one-token decode step): every kernel of the launches (start, forward, backward, update) compiled by NVRTC (the gate's PyPI wheels) and run by `dsv3c bench sim`
# (= `dsv3c bench kernels --device sim`)
# on one host thread (a sample of each launch's blocks), registers from ptxas. Prints a Markdown report
# (machine, versions, command, then the table) to stdout; commit it verbatim under bench/results/.
#   bench/emulator.sh [SPEC] [extra `dsv3c bench sim` flags] > report.md   (default spec/tiny.yaml; progress on stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-spec/tiny.yaml}
shift || true
VENV="${DSV3C_CUDA_VENV:-target/cuda-wheels}"
[ -x "$VENV/bin/python" ] || { echo "run scripts/nvrtc-gate.sh first (it installs the CUDA wheels into $VENV)" >&2; exit 1; }
NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.abspath(list(nvidia.__path__)[0]))')"
export DSV3C_NVRTC="$NV/cuda_nvrtc/lib"
cargo build --release -q --bin dsv3c
cmd=(./target/release/dsv3c bench sim "$SPEC" --ptxas "$NV/cuda_nvcc/bin/ptxas" "$@")
echo "# PTX emulator: speed and H100 estimates, $(basename "$SPEC" .yaml)"
echo
source bench/machine.sh
echo "- the emulator ran on one host thread"
echo "- NVRTC / ptxas: $("$NV/cuda_nvcc/bin/ptxas" --version | tail -1)"
echo "- command: \`bench/emulator.sh $SPEC $*\` = \`${cmd[*]/$NV/\$NV}\`"
echo
echo "Estimates are lower bounds from the emulator's counters (tensor and FMA FLOPs at peak, distinct global"
echo "bytes at 3.35 TB/s, warp instructions at 4 per SM per clock, shared wavefronts at 1 per SM per clock, on an"
echo "H100 SXM at 1.98 GHz), not measurements; a kernel's row sums its entry points."
if [[ " $* " == *" --decode "* ]]; then
  echo "The step is the one-token decode step (\`--decode\`): each sequence's new token through every layer, absorbed"
  echo "MLA over a latent cache of \`--seq\` positions (random positions: every row is read), and the LM head."
else
  echo "The step is one micro-batch: start, forward, backward and update (gradient norm, optimizer, balancing bias)."
fi
echo "Arguments over 256 MiB are zero pages, not random data (the host backs only what the sampled blocks touch)."
echo "GFLOP counts the useful matrix math; MB the bytes the arguments span (an embedding table: its tokens' rows)."
echo
"${cmd[@]}"
