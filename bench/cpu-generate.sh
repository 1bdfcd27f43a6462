#!/usr/bin/env bash
# CPU generation benchmark: `dsv3c generate` vs transformers' `generate` on the same random model
# (spec/tiny.yaml's shape, weights drawn by PyTorch and read by both), greedy, batch 1 and 8, prompts
# of P tokens, N new tokens, the same thread count, side by side in one run. Prints a Markdown report
# (machine, versions, command, table) to stdout; commit it verbatim under bench/results/.
#   bench/cpu-generate.sh [PYTHON] > report.md   (PYTHON needs torch + transformers; default /opt/parity/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/opt/parity/bin/python}
THREADS=${THREADS:-2}
P=${P:-32}
N=${N:-64}
cargo build --release -q --bin dsv3c
export RAYON_NUM_THREADS=$THREADS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./target/release/dsv3c export-hf spec/tiny.yaml -o "$work/config.json"
declare -A hf ours spec
for b in 1 8; do
  echo "transformers, batch $b" >&2
  hf[$b]=$("$PY" bench/pytorch_generate_cpu.py "$work/config.json" "$work/model" --batch "$b" --prompt "$P" \
    --new "$N" --threads "$THREADS" 2>/dev/null | tail -1)
  for kv in f32 bf16 fp8; do
    echo "dsv3c, batch $b, $kv cache" >&2
    # The median of three runs by decode speed.
    runs=()
    for _ in 1 2 3; do
      runs+=("$(./target/release/dsv3c generate --hf "$work/model" --prompt-tokens "$work/model/prompts-$b.json" \
        --max-new-tokens "$N" --ignore-eos --kv-cache "$kv" --device cpu --json 2>/dev/null | tail -1)")
    done
    ours[$b-$kv]=$("$PY" -c 'import json,sys; r=sorted((json.loads(a) for a in sys.argv[1:]), key=lambda x: x["decode_tokens_per_sec"]); print(json.dumps(r[1]))' "${runs[@]}")
  done
done
echo "# CPU generation: dsv3c generate vs transformers generate, tiny"
echo
source bench/machine.sh
echo "- python: $("$PY" --version 2>&1), torch $("$PY" -c 'import torch; print(torch.__version__)'), transformers $("$PY" -c 'import transformers; print(transformers.__version__)')"
echo "- threads: $THREADS for both (rayon / torch.set_num_threads)"
echo "- command: \`bench/cpu-generate.sh $*\` (THREADS=$THREADS P=$P N=$N)"
echo "- model: spec/tiny.yaml's shape (vocab 50304, d 64, 3 layers, MoE 8 experts top-2) in f32, random weights"
echo "  drawn by transformers (std 0.1) and read by both; no MTP. Greedy, end-of-sequence off, prompts of $P random"
echo "  tokens, $N new tokens. transformers: prefill = median of \`generate(max_new_tokens=1)\`, decode ="
echo "  batch·(N−1) / (median of \`generate(N)\` − prefill), 3 runs each after a warm-up. dsv3c: its own prefill and"
echo "  decode timers (\`--json\`), median of 3 runs; compiling the programs and loading the weights are not timed."
echo
"$PY" - "${hf[1]}" "${hf[8]}" "${ours[1-f32]}" "${ours[1-bf16]}" "${ours[1-fp8]}" "${ours[8-f32]}" "${ours[8-bf16]}" "${ours[8-fp8]}" <<'PYEOF'
import json, sys
hf1, hf8, o1x, o1, o1f, o8x, o8, o8f = (json.loads(a) for a in sys.argv[1:])
print("| batch | implementation | prefill tokens/s | decode tokens/s | decode vs transformers | leading tokens equal |")
print("|---:|---|---:|---:|---:|---:|")
for b, hf, rows in [(1, hf1, [("f32", o1x), ("bf16", o1), ("fp8", o1f)]), (8, hf8, [("f32", o8x), ("bf16", o8), ("fp8", o8f)])]:
    print(f"| {b} | transformers generate | {hf['prefill_tokens_per_sec']:.0f} | {hf['decode_tokens_per_sec']:.0f} | 1.00x | |")
    for kv, o in rows:
        # Each continuation's tokens before its first difference from transformers'.
        same = sum(next((i for i, (x, y) in enumerate(zip(a, c)) if x != y), len(c)) for a, c in zip(o["tokens"], hf["tokens"]))
        total = sum(len(a) for a in hf["tokens"])
        print(f"| {b} | dsv3c generate, {kv} cache | {o['prefill_tokens_per_sec']:.0f} | {o['decode_tokens_per_sec']:.0f} | "
              f"{o['decode_tokens_per_sec'] / hf['decode_tokens_per_sec']:.2f}x | {same}/{total} |")
PYEOF
