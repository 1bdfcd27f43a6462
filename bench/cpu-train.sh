#!/usr/bin/env bash
# CPU training-step benchmark: dsv3c vs PyTorch (transformers' DeepseekV3, eager and
# torch.compile) on the same model, batch and thread count. Prints a Markdown table.
#   bench/cpu-train.sh [PYTHON]   (PYTHON needs torch + transformers; default /opt/parity/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/opt/parity/bin/python}
THREADS=${THREADS:-2}
cargo build --release -q
export RAYON_NUM_THREADS=$THREADS
cfg=$(mktemp --suffix .json)
./target/release/dsv3c export-hf spec/tiny.yaml -o "$cfg"
ours=$(./target/release/dsv3c bench train --hf-comparable --steps 20 --json 2>/dev/null | tail -1)
full=$(./target/release/dsv3c bench train --steps 20 --json 2>/dev/null | tail -1)
eager=$($PY bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps 20 2>/dev/null | tail -1)
grouped=$($PY bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps 20 --experts grouped_mm 2>/dev/null | tail -1)
compiled=$($PY bench/pytorch_train_cpu.py "$cfg" --threads "$THREADS" --steps 20 --compile 2>/dev/null | tail -1)
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
print("|---|---|---|---|")
for name, r in rows:
    print(f"| {name} | {r['median_step_s']*1e3:.1f} | {r['tokens_per_sec']:.0f} | {r['tokens_per_sec']/ours['tokens_per_sec']:.2f}x |")
print(f"\nWith MTP (depth 1) and the balance loss, which transformers does not run: dsv3c {full['median_step_s']*1e3:.1f} ms/step, {full['tokens_per_sec']:.0f} tokens/s.")
PYEOF
rm -f "$cfg"
