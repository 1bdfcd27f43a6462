#!/usr/bin/env bash
# In-process data parallelism on the CPU: configs/tiny.yaml on one device against configs/tiny-dp2.yaml
# (the same global batch of 8 × 64 tokens as 2 ranks × 4 sequences) with ZeRO-1 and with the optimizer
# state replicated, STEPS steps each (default 30), the dev profile CI uses. Prints a Markdown report
# (machine, versions, command, table) to stdout; commit it verbatim under bench/results/.
#   bench/dp-cpu.sh [STEPS] > report.md
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
cargo build --locked -q
D=target/debug/dsv3c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e 's/^parallel: {dp: 2, zero: 1}/parallel: {dp: 2, zero: 0}/' -e "s|^spec: ../spec/tiny.yaml|spec: $PWD/spec/tiny.yaml|" \
  configs/tiny-dp2.yaml > "$tmp/tiny-dp2-zero0.yaml"
run() { # name, then train's flags
  local name=$1; shift
  echo "== $name" >&2
  "$D" train --steps "$STEPS" --validation-batches 0 --device cpu --out "$tmp/$name" "$@" > /dev/null 2> "$tmp/$name.log"
}
run one --config configs/tiny.yaml
run dp2-zero1 --config configs/tiny-dp2.yaml --nproc 2
run dp2-zero0 --config "$tmp/tiny-dp2-zero0.yaml" --nproc 2
echo "# In-process data parallelism on the CPU (tiny)"
echo
source bench/machine.sh
echo "- command: \`bench/dp-cpu.sh $STEPS\` (\`dsv3c train --steps $STEPS --validation-batches 0 --device cpu\`, dev profile)"
echo
echo "Every run trains 8 sequences × 64 tokens per step in the same order. *Step* is the median wall time of"
echo "steps 3..$STEPS (rank 0's, which waits for the other at each collective); *tok/s* the whole job's tokens"
echo "per second at that median. *Δ loss* is the largest relative difference from the one-device run's loss"
echo "over all steps."
echo
python3 - "$tmp" <<'PY'
import json, sys, statistics, pathlib
tmp = pathlib.Path(sys.argv[1])
def load(name):
    return [json.loads(l) for l in (tmp / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
base = load("one")
print("| run | ranks | optimizer state | step (ms) | tok/s | final loss | Δ loss vs one device |")
print("|---|---:|---|---:|---:|---:|---:|")
for name, ranks, state in [("one", 1, "whole"), ("dp2-zero1", 2, "ZeRO-1: half per rank"), ("dp2-zero0", 2, "replicated")]:
    r = load(name)
    t = statistics.median(x["step_time_s"] for x in r[2:])
    tok = r[0]["tokens"] / r[0]["step"]
    d = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(r, base))
    print(f"| {name} | {ranks} | {state} | {t*1e3:.0f} | {tok/t:.0f} | {r[-1]['loss']:.4f} | {d:.1e} |")
PY
