#!/usr/bin/env bash
# CPU training-step benchmark: dsv3c vs PyTorch (transformers' DeepseekV3, eager and torch.compile) on
# the same model (spec/tiny.yaml, configs/tiny.yaml's batch of 8 x 64 tokens), thread count and step
# (forward, backward, clipping, AdamW), side by side in one run. Prints a Markdown report (machine,
# versions, command, table) to stdout; commit it verbatim under bench/results/.
#   bench/cpu-train.sh [PYTHON] > report.md   (PYTHON needs torch + transformers; default /opt/parity/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/opt/parity/bin/python}
THREADS=${THREADS:-2}
STEPS=${STEPS:-20}
cargo build --release -q --bin dsv3c
export RAYON_NUM_THREADS=$THREADS
cfg=$(mktemp --suffix .json)
trap 'rm -f "$cfg"' EXIT
./target/release/dsv3c export-hf spec/tiny.yaml -o "$cfg"
echo "dsv3c" >&2
ours=$(./target/release/dsv3c bench train --hf-comparable --steps "$STEPS" --json 2>/dev/null | tail -1)
full=$(./target/release/dsv3c bench train --steps "$STEPS" --json 2>/dev/null | tail -1)
echo "PyTorch eager" >&2
eager=$("$PY" bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps "$STEPS" 2>/dev/null | tail -1)
grouped=$("$PY" bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps "$STEPS" --experts grouped_mm 2>/dev/null | tail -1)
echo "PyTorch torch.compile" >&2
compiled=$("$PY" bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps "$STEPS" --compile 2>/dev/null | tail -1)
echo "# CPU training step: dsv3c vs PyTorch, tiny"
echo
source bench/machine.sh
echo "- python: $("$PY" --version 2>&1), torch $("$PY" -c 'import torch; print(torch.__version__)'), transformers $("$PY" -c 'import transformers; print(transformers.__version__)')"
echo "- threads: $THREADS for both (rayon / torch.set_num_threads)"
echo "- command: \`bench/cpu-train.sh $*\` (THREADS=$THREADS STEPS=$STEPS)"
echo "- model: spec/tiny.yaml in f32, batch 8 x 64 tokens. Both sides run exactly transformers' DeepseekV3"
echo "  (no MTP, no balance loss: \`dsv3c bench train --hf-comparable\`; PyTorch reads \`dsv3c export-hf spec/tiny.yaml\`)."
echo "- step: forward, backward, global-norm clipping, AdamW; median of $STEPS steps after 2 warm-up steps."
echo
"$PY" - "$ours" "$full" "$eager" "$grouped" "$compiled" <<'PYEOF'
import json, sys
ours, full, eager, grouped, comp = (json.loads(a) for a in sys.argv[1:])
rows = [
    ("dsv3c (CPU reference backend)", ours),
    ("PyTorch eager, experts eager", eager),
    ("PyTorch eager, experts grouped_mm", grouped),
    ("PyTorch torch.compile", comp),
]
print("| implementation | median step (ms) | tokens/s | vs dsv3c |")
print("|---|---:|---:|---:|")
for name, r in rows:
    print(f"| {name} | {r['median_step_s']*1e3:.1f} | {r['tokens_per_sec']:.0f} | {r['tokens_per_sec']/ours['tokens_per_sec']:.2f}x |")
print(f"\nWith MTP (depth 1) and the balance loss, which transformers does not run: dsv3c {full['median_step_s']*1e3:.1f} ms/step, {full['tokens_per_sec']:.0f} tokens/s.")
PYEOF
