#!/usr/bin/env bash
# DeepSeek-V3's FP8 recipe against f32 on the CPU: configs/small-fp8.yaml (spec/small-fp8.yaml: bf16
# weights, f32 masters, E4M3 GEMMs in 1x128 / 128x128 tiles) trained for its 60 steps beside the same
# model, data, seed and recipe with the spec's precision set to f32 (both at once). Prints a Markdown report (machine,
# versions, command, then the loss table) to stdout; commit it verbatim under bench/results/.
#   bench/fp8-recipe.sh > report.md   (progress on stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin dsv3c
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The f32 twin: the same spec text but its precision block, and the same recipe pointing at it.
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
spec = open("spec/small-fp8.yaml").read()
head, _, _ = spec.partition("precision:")
open(f"{work}/small-f32.yaml", "w").write(head.replace("name: small-fp8", "name: small-f32") + "precision:\n  master: f32\n  param: f32\n  compute: f32\n")
cfg = open("configs/small-fp8.yaml").read().replace("spec: ../spec/small-fp8.yaml", "spec: small-f32.yaml")
open(f"{work}/small-f32-recipe.yaml", "w").write(cfg)
PY
cmd_fp8=(./target/release/dsv3c train --config configs/small-fp8.yaml --out "$work/fp8")
cmd_f32=(./target/release/dsv3c train --config "$work/small-f32-recipe.yaml" --out "$work/f32")
echo "# FP8 recipe vs f32 on the CPU reference: small-fp8, 60 steps"
echo
source bench/machine.sh
echo "- command: \`bench/fp8-recipe.sh\` = \`${cmd_fp8[*]/$work/\$TMP}\` and, at the same time, \`${cmd_f32[*]/$work/\$TMP}\`"
echo "  (the f32 twin: spec/small-fp8.yaml with precision master/param/compute f32 and no fp8 block)"
echo
# Both at once: the built-in corpus is the project's own files, read when a run starts — started together,
# an edit to the tree cannot give the two runs different data (checked below).
"${cmd_fp8[@]}" > "$work/fp8.log" 2>&1 &
"${cmd_f32[@]}" > "$work/f32.log" 2>&1 &
wait %1 && wait %2 || { cat "$work"/*.log >&2; exit 1; }
cat "$work/fp8.log" "$work/f32.log" >&2
if [ "$(grep '^corpus:' "$work/fp8.log")" != "$(grep '^corpus:' "$work/f32.log")" ]; then
  echo "the two runs read different corpora (the tree changed between their starts): run again" >&2
  exit 1
fi
echo "- data: $(grep '^corpus:' "$work/fp8.log" | sed 's/^corpus: //'), the same batches in both runs"
echo
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
load = lambda d: {r["step"]: r for r in map(json.loads, open(f"{work}/{d}/metrics.jsonl")) if "loss" in r}
fp8, f32 = load("fp8"), load("f32")
print("| step | loss FP8 | loss f32 | FP8 / f32 − 1 |")
print("|---:|---:|---:|---:|")
for s in sorted(fp8):
    a, b = fp8[s]["loss"], f32[s]["loss"]
    print(f"| {s} | {a:.4f} | {b:.4f} | {a / b - 1:+.2%} |")
last = max(fp8)
a, b = fp8[last]["loss"], f32[last]["loss"]
val = lambda d: float(open(f"{work}/{d}.log").read().split("validation loss ")[1].split()[0])
va, vb = val("fp8"), val("f32")
print()
print(f"| validation (16 batches) after {last} | {va:.4f} | {vb:.4f} | {va / vb - 1:+.2%} |")
print()
print(f"After {last} steps the FP8 recipe's training loss is within {abs(a / b - 1):.2%} of f32 and its validation "
      f"loss within {abs(va / vb - 1):.2%} (training loss fell from {fp8[min(fp8)]['loss']:.4f} at step {min(fp8)}).")
PY
