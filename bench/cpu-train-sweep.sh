#!/usr/bin/env bash
# CPU training-step sweep: dsv3c vs PyTorch (transformers' DeepseekV3: eager with its eager and
# grouped_mm experts, and torch.compile) over the shapes of bench/shapes/ and tiny, on the same
# model (`dsv3c export-hf`, no MTP, no balance loss: `bench train --hf-comparable`), batch, thread
# count and step (forward, backward, clipping, AdamW); bf16 shapes run PyTorch under bf16 autocast
# (f32 weights, bf16 matmuls). The machine's f32 GEMM rate is measured in the same run (the better of
# PyTorch's BLAS and dsv3c's GEMM on 2048³), and each step's training FLOPs (the spec's count) per
# second is given as a fraction of it. Prints a Markdown report (machine, versions, command, table)
# to stdout; commit it verbatim under bench/results/.
#   bench/cpu-train-sweep.sh [PYTHON] > report.md   (PYTHON: torch + transformers, bench/setup-pytorch.sh)
#   SHAPES="tiny mid" STEPS=3 THREADS=2 bench/cpu-train-sweep.sh
# WORK=DIR keeps each measurement's JSON in DIR (a fresh temporary folder, removed, otherwise);
# REPORT_ONLY=1 prints the report from a WORK folder's measurements without measuring again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/opt/parity/bin/python}
THREADS=${THREADS:-2}
STEPS=${STEPS:-3}
SHAPES=${SHAPES:-tiny mid mid-bf16 wide large}
cargo build --release -q --bin dsv3c
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
if [ -n "${WORK:-}" ]; then work=$WORK; mkdir -p "$work"; else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
dsv3c=./target/release/dsv3c
if [ "${REPORT_ONLY:-0}" != 1 ]; then
echo "GEMM rate" >&2
"$dsv3c" bench gemm --n 2048 --json > "$work/gemm-dsv3c.json"
"$PY" bench/gemm_rate.py --n 2048 --threads "$THREADS" > "$work/gemm-torch.json"
for shape in $SHAPES; do
  if [ "$shape" = tiny ]; then recipe=configs/tiny.yaml spec=spec/tiny.yaml; else
    recipe=bench/shapes/$shape-recipe.yaml spec=bench/shapes/$shape.yaml; fi
  read -r micro seq <<< "$(sed -n 's/^  micro_batch: //p; s/^  seq_len: //p' "$recipe" | tr '\n' ' ')"
  bf16=(); grep -q '^  compute: bf16' "$spec" && bf16=(--bf16)
  "$dsv3c" export-hf "$spec" -o "$work/$shape.json" >/dev/null
  echo "$shape: dsv3c" >&2
  "$dsv3c" bench train --config "$recipe" --hf-comparable --steps "$STEPS" --json 2>/dev/null | tail -1 > "$work/$shape-dsv3c.json"
  for impl in eager grouped compile; do
    echo "$shape: PyTorch $impl" >&2
    case $impl in
      eager) extra=() ;; grouped) extra=(--experts grouped_mm) ;; compile) extra=(--compile) ;;
    esac
    "$PY" bench/pytorch_train_cpu.py "$work/$shape.json" --batch "$micro" --seq "$seq" --threads "$THREADS" \
      --steps "$STEPS" "${bf16[@]}" "${extra[@]}" 2>/dev/null | tail -1 > "$work/$shape-$impl.json"
  done
done
fi
echo "# CPU training step across shapes: dsv3c vs PyTorch"
echo
source bench/machine.sh
echo "- python: $("$PY" --version 2>&1), torch $("$PY" -c 'import torch; print(torch.__version__)'), transformers $("$PY" -c 'import transformers; print(transformers.__version__)')"
echo "- threads: $THREADS for both (rayon / torch.set_num_threads, OMP_NUM_THREADS)"
echo "- command: \`bench/cpu-train-sweep.sh $*\` (THREADS=$THREADS STEPS=$STEPS SHAPES=\"$SHAPES\")"
echo "- models: the spec in f32 (bf16: bf16 compute, f32 masters; PyTorch under bf16 autocast), exactly transformers'"
echo "  DeepseekV3 on both sides (\`dsv3c bench train --hf-comparable\`; PyTorch reads \`dsv3c export-hf\`)."
echo "- step: forward, backward, global-norm clipping, AdamW; median of $STEPS steps after 2 warm-up steps."
echo "- GEMM rate: f32 2048³, median of 10 after a warm-up; the machine's is the better of the two."
echo
"$PY" - "$work" $SHAPES <<'PYEOF'
import json, os, sys
work, shapes = sys.argv[1], sys.argv[2:]
load = lambda name: json.load(open(os.path.join(work, name)))
gd, gt = load("gemm-dsv3c.json"), load("gemm-torch.json")
rate = max(gd["gflops"], gt["gflops"])
print(f"GEMM rate: dsv3c {gd['gflops']:.1f} GFLOP/s, PyTorch ({gt['blas']}) {gt['gflops']:.1f} GFLOP/s; the machine's: {rate:.1f} GFLOP/s.\n")
print("| shape | tokens/step | dsv3c step (ms) | dsv3c tok/s | eager tok/s | eager grouped_mm tok/s | torch.compile tok/s | dsv3c vs best PyTorch | dsv3c % of GEMM rate |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in shapes:
    ours = load(f"{s}-dsv3c.json")
    pt = {k: load(f"{s}-{k}.json") for k in ("eager", "grouped", "compile")}
    best = max(r["tokens_per_sec"] for r in pt.values())
    flops_per_s = ours["training_flops_per_token"] * ours["tokens_per_sec"]
    print(f"| {s} | {ours['tokens_per_step']:.0f} | {ours['median_step_s']*1e3:.0f} | {ours['tokens_per_sec']:.0f} | "
          f"{pt['eager']['tokens_per_sec']:.0f} | {pt['grouped']['tokens_per_sec']:.0f} | {pt['compile']['tokens_per_sec']:.0f} | "
          f"{ours['tokens_per_sec']/best:.2f}x | {100*flops_per_s/(rate*1e9):.0f}% |")
PYEOF
