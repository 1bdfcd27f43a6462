#!/usr/bin/env bash
# In-process parallel training on the CPU: configs/tiny.yaml on one device against the same global batch
# (8 sequences × 64 tokens a step, in the same order) on data-parallel ranks (ZeRO-1 and replicated), expert-
# parallel ranks, two pipeline stages (1F1B), all three together (configs/tiny-3d.yaml), and with selective
# recomputation; STEPS steps each (default 30), the dev profile CI uses. Prints a Markdown report (machine,
# versions, command, table) to stdout; commit it verbatim under bench/results/. Leave the tree alone while it
# runs: the built-in corpus is the project's own files.
#   bench/parallel-cpu.sh [STEPS] > report.md
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
cargo build --locked -q
D=target/debug/dsv3c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A recipe of tiny-dp2.yaml's with the batch `micro x acc` and `parallel: {PARALLEL}` (and extra lines).
variant() { # name, micro_batch, accumulation, parallel, [extra line]
  sed -e "s|^spec: ../spec/tiny.yaml|spec: $PWD/spec/tiny.yaml|" -e "s/^  micro_batch: 4/  micro_batch: $2/" \
    -e "s/^  accumulation: 1/  accumulation: $3/" -e "s/^parallel: {dp: 2, zero: 1}/parallel: {$4}/" \
    configs/tiny-dp2.yaml > "$tmp/$1.yaml"
  if [ -n "${5:-}" ]; then echo "$5" >> "$tmp/$1.yaml"; fi
}
variant dp2-zero0 4 1 "dp: 2, zero: 0"
variant dp2-ep2 4 1 "dp: 2, ep: 2, zero: 1"
variant pp2 4 2 "pp: 2"
variant 3d-recompute 2 2 "dp: 2, ep: 2, pp: 2, zero: 1" "recompute: selective"
run() { # name, then train's flags
  local name=$1; shift
  echo "== $name" >&2
  "$D" train --steps "$STEPS" --validation-batches 0 --device cpu --out "$tmp/$name" "$@" > /dev/null 2> "$tmp/$name.log"
}
run one --config configs/tiny.yaml
run dp2-zero1 --config configs/tiny-dp2.yaml --nproc 2
run dp2-zero0 --config "$tmp/dp2-zero0.yaml" --nproc 2
run dp2-ep2 --config "$tmp/dp2-ep2.yaml" --nproc 2
run pp2 --config "$tmp/pp2.yaml" --nproc 2
run 3d --config configs/tiny-3d.yaml --nproc 4
run 3d-recompute --config "$tmp/3d-recompute.yaml" --nproc 4
echo "# In-process parallel training on the CPU (tiny)"
echo
source bench/machine.sh
echo "- command: \`bench/parallel-cpu.sh $STEPS\` (\`dsv3c train --steps $STEPS --validation-batches 0 --device cpu\`, dev profile)"
echo
echo "Every run trains 8 sequences × 64 tokens per step in the same order (the pipelines as two micro-batches"
echo "per data-parallel rank, in the 1F1B order). *Step* is the median wall time of steps 3..$STEPS (rank 0's,"
echo "which waits for the others at each collective); *tok/s* the whole job's tokens per second at that"
echo "median. *Δ loss* is the largest relative difference from the one-device run's loss over all steps."
echo "The ranks are threads sharing this machine's cores: the table shows what the parallelism costs here"
echo "(exchanges, pipeline bubbles, recomputation), not a speed-up."
echo
python3 - "$tmp" <<'PY'
import json, sys, statistics, pathlib
tmp = pathlib.Path(sys.argv[1])
def load(name):
    return [json.loads(l) for l in (tmp / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
base = load("one")
print("| run | layout | ranks | micro-batch x accumulation | step (ms) | tok/s | final loss | Δ loss vs one device |")
print("|---|---|---:|---|---:|---:|---:|---:|")
for name, layout, ranks, batch in [
    ("one", "one device", 1, "8 x 1"),
    ("dp2-zero1", "dp=2, ZeRO-1", 2, "4 x 1"),
    ("dp2-zero0", "dp=2, replicated", 2, "4 x 1"),
    ("dp2-ep2", "dp=2, ep=2, ZeRO-1", 2, "4 x 1"),
    ("pp2", "pp=2", 2, "4 x 2"),
    ("3d", "dp=2, ep=2, pp=2, ZeRO-1", 4, "2 x 2"),
    ("3d-recompute", "dp=2, ep=2, pp=2, selective recomputation", 4, "2 x 2"),
]:
    r = load(name)
    t = statistics.median(x["step_time_s"] for x in r[2:])
    tok = r[0]["tokens"] / r[0]["step"]
    d = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(r, base))
    print(f"| {name} | {layout} | {ranks} | {batch} | {t*1e3:.0f} | {tok/t:.0f} | {r[-1]['loss']:.4f} | {d:.1e} |")
PY
