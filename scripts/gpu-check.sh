#!/usr/bin/env bash
# The GPU check, in two halves: `build` here (the GPU machine has no Rust toolchain) and `run` there.
#
#   scripts/gpu-check.sh build        # release dsv3c + the GPU backend suite's test binary, stripped, into .device/gpu-check/
#   scripts/gpu-check.sh run [OUT]    # on the GPU machine, from the repo root (the device tool: carry [".device"])
#
# `run` does, each step under its own time limit and each recorded pass/fail in the summary:
#   1. the backend suite on `cuda` (every op's kernel against the CPU reference) and on `sim`;
#   2. five f32 training steps of tiny on cuda beside the CPU (losses within 1e-4 relative);
#   3. `dsv3c bench kernels` on cuda for tiny and 1b (CUDA events, warm-up, medians);
#   4. `dsv3c bench train --device cuda` for tiny and 1b (tokens/s, MFU);
#   5. PyTorch beside it: transformers' DeepseekV3 of the same specs (`dsv3c export-hf`), eager and
#      torch.compile, same batch (bench/pytorch_train_gpu.py);
# and prints one table last. Every table and log goes to OUT (default $OUT, else .device/gpu-check/out):
# at most 8 files, as the device tool returns them. Commit what it measured under bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.device/gpu-check

build() {
    set -e
    mkdir -p "$DIR"
    cargo build --release --locked -q --bin dsv3c
    local json exe
    json=$(cargo test --release --locked -q -p dsv3c-codegen --test gpu_sim --no-run --message-format=json 2>/dev/null)
    exe=$(printf '%s\n' "$json" | python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_sim": print(m["executable"])' | tail -1)
    [ -n "$exe" ] || { echo "no gpu_sim test binary was built" >&2; exit 1; }
    strip -o "$DIR/dsv3c" target/release/dsv3c
    strip -o "$DIR/gpu_sim" "$exe"
    du -ch "$DIR"/dsv3c "$DIR"/gpu_sim | tail -1 | sed 's/^/carry: .device (/; s/$/; the device tool takes 64 MiB)/'
}

run() {
    local out=${1:-${OUT:-$DIR/out}}
    mkdir -p "$out"
    local sum="$out/gpu-check.md" log="$out/gpu-check.log"
    : >"$log"
    # NVRTC: the CUDA toolkit's, or the nvidia-cuda-nvrtc wheel PyTorch brings.
    if [ -z "${DSV3C_NVRTC:-}" ]; then
        DSV3C_NVRTC=$(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null || true)
        export DSV3C_NVRTC
    fi
    export DSV3C_CACHE="$DIR/cache"
    {
        echo "# GPU check"
        echo
        echo "- date: $(date -u +%Y-%m-%d)"
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
        echo "- host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
        echo "- dsv3c: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "- NVRTC: ${DSV3C_NVRTC:-not found}"
        echo "- torch: $(python3 -c 'import torch, transformers; print(torch.__version__, "/ transformers", transformers.__version__)' 2>/dev/null || echo none)"
        echo
        echo "| step | result | seconds | figure |"
        echo "|---|---|---:|---|"
    } >"$sum"
    step() { # step NAME LIMIT_S FIGURE_CMD -- COMMAND...
        local name=$1 limit=$2 figure=$3
        shift 4
        local t0 rc fig
        t0=$(date +%s)
        echo "== $name: $*" >>"$log"
        timeout "$limit" "$@" >>"$out/$name.txt" 2>>"$log"
        rc=$?
        fig=$(eval "$figure" 2>/dev/null | head -1 | sed 's/|/\\|/g')
        printf '| %s | %s | %d | %s |\n' "$name" "$([ $rc = 0 ] && echo pass || echo "FAIL (rc $rc)")" \
            "$(($(date +%s) - t0))" "$fig" >>"$sum"
    }
    local D=$DIR/dsv3c
    # Here a missing NVRTC or an absent GPU is a failure, not a skip.
    step backend-suite 240 "grep -h 'test result' $out/backend-suite.txt" -- \
        env DSV3C_REQUIRE_NVRTC=1 DSV3C_REQUIRE_CUDA=1 "$DIR/gpu_sim" --test-threads 1
    step train-cuda 120 "grep -h '^step 5/5' $out/train-cuda.txt" -- \
        "$D" train --config configs/tiny.yaml --device cuda --steps 5 --validation-batches 0 --out "$DIR/runs/cuda"
    step train-cpu 120 "grep -h '^step 5/5' $out/train-cpu.txt" -- \
        "$D" train --config configs/tiny.yaml --device cpu --steps 5 --validation-batches 0 --out "$DIR/runs/cpu"
    step losses-agree 10 "cat $out/losses-agree.txt" -- python3 -c '
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
print(f"worst relative loss difference over {len(a)} steps: {worst:.2e}"); sys.exit(worst > 1e-4 or len(a) != 5)' \
        "$DIR/runs/cuda/metrics.jsonl" "$DIR/runs/cpu/metrics.jsonl"
    step bench-kernels-tiny 120 "tail -1 $out/bench-kernels-tiny.txt" -- "$D" bench kernels spec/tiny.yaml --device cuda --batch 8 --seq 64
    step bench-kernels-1b 240 "tail -1 $out/bench-kernels-1b.txt" -- "$D" bench kernels spec/1b.yaml --device cuda
    step bench-train-tiny 120 "cat $out/bench-train-tiny.txt" -- "$D" bench train --config configs/tiny.yaml --device cuda --hf-comparable
    step bench-train-1b 300 "cat $out/bench-train-1b.txt" -- "$D" bench train --config configs/1b.yaml --device cuda --steps 5 --hf-comparable
    for spec in tiny 1b; do
        "$D" export-hf "spec/$spec.yaml" -o "$DIR/$spec-hf.json" >>"$log" 2>&1
    done
    local fpt
    fpt=$("$D" inspect spec/1b.yaml --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["flops_per_token"]["training"])' 2>/dev/null || echo 0)
    step torch-tiny-eager 120 "cat $out/torch-tiny-eager.txt" -- python3 bench/pytorch_train_gpu.py "$DIR/tiny-hf.json" --batch 8 --seq 64
    step torch-1b-eager 240 "cat $out/torch-1b-eager.txt" -- python3 bench/pytorch_train_gpu.py "$DIR/1b-hf.json" --batch 4 --seq 4096 --steps 5 --flops-per-token "$fpt"
    step torch-1b-compile 300 "cat $out/torch-1b-compile.txt" -- python3 bench/pytorch_train_gpu.py "$DIR/1b-hf.json" --batch 4 --seq 4096 --steps 5 --compile --flops-per-token "$fpt"
    # At most 8 files come back: the summary, the log, and the tables that matter.
    for f in "$out"/*.txt; do
        case $(basename "$f") in
            bench-kernels-tiny.txt | bench-kernels-1b.txt | backend-suite.txt) ;;
            *) { echo "== $(basename "$f")"; cat "$f"; } >>"$log"; rm -f "$f" ;;
        esac
    done
    cat "$sum"
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    *) echo "usage: scripts/gpu-check.sh build | run [OUT]" >&2; exit 2 ;;
esac
