#!/usr/bin/env bash
# The GPU check, in two halves: `build` here (the GPU machine has no Rust toolchain) and `run` there.
#
#   scripts/gpu-check.sh build        # release dsv3c + the GPU backend suite's test binary, stripped, into .device/gpu-check/
#   scripts/gpu-check.sh run [OUT]    # on the GPU machine, from the repo root (the device tool: carry [".device"])
#
# `run` does, each step under its own time limit (about 8 minutes in all, in order of value), each
# recorded pass/fail in the summary as it ends:
#   1. the GPU backend suite on `cuda` (every op's kernel against the CPU reference, five f32 steps of
#      tiny, cubins) — a missing GPU or NVRTC fails it;
#   2. five f32 training steps of tiny through `dsv3c train --device cuda`, against the CPU's (made by
#      `build`, carried): losses within 1e-4 relative;
#   3. `dsv3c generate --device cuda` on a transformers fixture: its float64 greedy tokens;
#   4. `dsv3c bench kernels` on cuda for tiny and 1b (CUDA events, warm-up, medians, cold L2);
#   5. `dsv3c bench train --device cuda` for 1b and tiny (tokens/s, MFU);
#   6. PyTorch beside it: transformers' DeepseekV3 of the same specs (`dsv3c export-hf`), eager, same
#      batch (bench/pytorch_train_gpu.py); `compile` runs torch.compile of 1b as a second call;
# and prints the table last. OUT (default $OUT, else .device/gpu-check/out) holds at most 5 files at
# any moment (the device tool returns 8): the summary, all logs, the two kernel tables. Commit what it
# measured under bench/results/. NVRTC comes from the CUDA toolkit or PyTorch's wheel (12 or 13).
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
    # The CPU's five steps of tiny, for the GPU's to be compared with there (the run folder stays here).
    rm -rf "$DIR/cpu-run" "$DIR/runs"
    target/release/dsv3c train --config configs/tiny.yaml --device cpu --steps 5 --validation-batches 0 \
        --out "$DIR/cpu-run" >/dev/null 2>&1
    cp "$DIR/cpu-run/metrics.jsonl" "$DIR/cpu-metrics.jsonl"
    rm -rf "$DIR/cpu-run"
    strip -o "$DIR/dsv3c" target/release/dsv3c
    strip -o "$DIR/gpu_sim" "$exe"
    du -sh "$DIR" | cut -f1 | sed 's/^/carry: .device (/; s/$/; the device tool takes 64 MiB with the working tree)/'
}

run() {
    local out=${1:-${OUT:-$DIR/out}}
    local logs=$DIR/logs sum=$DIR/logs/gpu-check.md
    rm -rf "$DIR/runs" "$logs"
    mkdir -p "$out" "$logs" target/tmp
    export PYTHONUNBUFFERED=1 DSV3C_CACHE="$DIR/cache"
    # The test binary names this machine's paths (its CARGO_MANIFEST_DIR, CARGO_TARGET_TMPDIR).
    [ -d /work/main/spec ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
    # NVRTC: the toolkit's or PyTorch's wheel (CUDA 12 or 13 layout). cudarc looks for libnvrtc.so by
    # name, so a folder with that link goes first on the loader path, the real folder (the builtins) next.
    if [ -z "${DSV3C_NVRTC:-}" ]; then
        local lib site
        site=$(python3 -c 'import nvidia, os; print(os.path.abspath(list(nvidia.__path__)[0]))' 2>/dev/null || true)
        lib=$(ls -1 "$site"/cuda_nvrtc/lib/libnvrtc.so.1* "$site"/cu1*/lib/libnvrtc.so.1* \
            /usr/local/cuda*/lib64/libnvrtc.so.1* /usr/lib/x86_64-linux-gnu/libnvrtc.so.1* 2>/dev/null \
            | grep -v builtins | head -1)
        if [ -n "$lib" ]; then
            mkdir -p "$DIR/nvrtc"
            ln -sfn "$lib" "$DIR/nvrtc/libnvrtc.so"
            export DSV3C_NVRTC=$lib LD_LIBRARY_PATH="$PWD/$DIR/nvrtc:$(dirname "$lib"):${LD_LIBRARY_PATH:-}"
        fi
    fi
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
    # What comes back (at most 8 files, whenever the run stops): the summary, every log, the tables.
    publish() {
        cp "$sum" "$out/"
        for f in "$logs"/*.txt; do echo "== $(basename "$f")"; cat "$f"; done >"$out/gpu-check.log" 2>/dev/null
        for t in bench-kernels-tiny bench-kernels-1b; do
            [ -f "$logs/$t.txt" ] && cp "$logs/$t.txt" "$out/$t.md"
        done
        return 0
    }
    step() { # step NAME LIMIT_S FIGURE_CMD -- COMMAND...
        local name=$1 limit=$2 figure=$3
        shift 4
        local t0 rc fig
        t0=$(date +%s)
        echo "\$ $*" >"$logs/$name.txt"
        timeout "$limit" "$@" >>"$logs/$name.txt" 2>&1
        rc=$?
        fig=$(eval "$figure" 2>/dev/null | head -1)
        # A failure without its figure shows its error line.
        if [ $rc != 0 ] && [ -z "$fig" ]; then
            fig=$( (grep -m1 -E '×|[Ee]rror|panicked' "$logs/$name.txt" || tail -1 "$logs/$name.txt") | cut -c1-160)
        fi
        fig=$(printf '%s' "$fig" | sed 's/|/\\|/g')
        printf '| %s | %s | %d | %s |\n' "$name" "$([ $rc = 0 ] && echo pass || echo "FAIL (rc $rc)")" \
            "$(($(date +%s) - t0))" "$fig" >>"$sum"
        publish
    }
    local D=$DIR/dsv3c L=$logs
    # In order of value; the limits add up to about 8 minutes (the device tool allows 10 a call).
    step backend-suite 90 "grep -h 'test result' $L/backend-suite.txt" -- \
        env DSV3C_REQUIRE_NVRTC=1 DSV3C_REQUIRE_CUDA=1 "$DIR/gpu_sim" --test-threads 1 cuda five_training_steps_on_cuda cubin
    step train-cuda 60 "grep -h '^step 5/5' $L/train-cuda.txt" -- \
        "$D" train --config configs/tiny.yaml --device cuda --steps 5 --validation-batches 0 --out "$DIR/runs/cuda"
    step losses-agree 10 "tail -1 $L/losses-agree.txt" -- python3 -c '
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
print(f"cuda vs cpu (made at build time): worst relative loss difference over {len(a)} steps {worst:.2e}")
sys.exit(worst > 1e-4 or len(a) != 5)' "$DIR/runs/cuda/metrics.jsonl" "$DIR/cpu-metrics.jsonl"
    step generate-cuda 30 "tail -1 $L/generate-cuda.txt" -- python3 -c '
import json, subprocess, sys
d = "tests/parity/generate/gen_wide_yarn_top4"
o = subprocess.run([sys.argv[1], "generate", "--hf", d, "--prompt-tokens", d + "/prompts.json", "--max-new-tokens", "24",
                    "--json", "--device", "cuda"], capture_output=True, text=True)
print(o.stderr.strip().splitlines()[-1] if o.stderr.strip() else "")
got = json.loads(o.stdout.strip().splitlines()[-1])["tokens"]; want = json.load(open(d + "/expected.json"))["tokens"]
same = sum(g == w for g, w in zip(got, want))
print(f"generate on cuda: {same}/{len(want)} continuations equal to transformers float64 greedy")
sys.exit(same != len(want))' "$D"
    step bench-kernels-tiny 45 "tail -1 $L/bench-kernels-tiny.txt" -- "$D" bench kernels spec/tiny.yaml --device cuda --batch 8 --seq 64
    step bench-kernels-1b 120 "tail -1 $L/bench-kernels-1b.txt" -- "$D" bench kernels spec/1b.yaml --device cuda
    step bench-train-1b 90 "tail -1 $L/bench-train-1b.txt" -- "$D" bench train --config configs/1b.yaml --device cuda --steps 5 --hf-comparable
    "$D" export-hf spec/1b.yaml -o "$DIR/1b-hf.json" >/dev/null 2>&1
    "$D" export-hf spec/tiny.yaml -o "$DIR/tiny-hf.json" >/dev/null 2>&1
    local fpt
    fpt=$("$D" inspect spec/1b.yaml --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["flops_per_token"]["training"])' 2>/dev/null || echo 0)
    step torch-1b-eager 75 "tail -1 $L/torch-1b-eager.txt" -- python3 bench/pytorch_train_gpu.py "$DIR/1b-hf.json" --batch 4 --seq 4096 --steps 5 --flops-per-token "$fpt"
    step bench-train-tiny 30 "tail -1 $L/bench-train-tiny.txt" -- "$D" bench train --config configs/tiny.yaml --device cuda --hf-comparable
    step torch-tiny-eager 30 "tail -1 $L/torch-tiny-eager.txt" -- python3 bench/pytorch_train_gpu.py "$DIR/tiny-hf.json" --batch 8 --seq 64
    # torch.compile of 1b takes minutes: a second call, `scripts/gpu-check.sh compile`, if time is left.
    cat "$sum"
}

compile_torch() {
    local out=${1:-${OUT:-$DIR/out}}
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    local fpt
    fpt=$("$DIR/dsv3c" inspect spec/1b.yaml --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flops_per_token"]["training"])')
    "$DIR/dsv3c" export-hf spec/1b.yaml -o "$DIR/1b-hf.json"
    timeout 500 python3 bench/pytorch_train_gpu.py "$DIR/1b-hf.json" --batch 4 --seq 4096 --steps 5 --compile \
        --flops-per-token "$fpt" 2>&1 | tee "$out/torch-1b-compile.txt"
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    compile) shift; compile_torch "$@" ;;
    *) echo "usage: scripts/gpu-check.sh build | run [OUT] | compile [OUT]" >&2; exit 2 ;;
esac
