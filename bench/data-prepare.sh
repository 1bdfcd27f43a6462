#!/usr/bin/env bash
# data prepare benchmark: dsv3c (whole pipeline, and near-dedup only) beside Python datasketch
# MinHash LSH on the same synthetic corpus. Prints a Markdown table.
#   bench/data-prepare.sh [DISTINCT_DOCS] [PYTHON]   (PYTHON needs datasketch)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
PY=${2:-/opt/parity/bin/python}
cargo build --release -q
cargo run --release -q -p dsv3c-data --example synth_corpus -- /tmp/dsv3c-bench-corpus.jsonl "$N" > /dev/null
cat > /tmp/dsv3c-bench-dedup-only.yaml <<'YAML'
clean: {enabled: false}
quality: {enabled: false}
YAML
run() { ./target/release/dsv3c data prepare --input /tmp/dsv3c-bench-corpus.jsonl --out /tmp/dsv3c-bench-out "$@" | tail -1; }
full=$(run)
dedup=$(run --config /tmp/dsv3c-bench-dedup-only.yaml)
py=$($PY bench/datasketch_minhash.py /tmp/dsv3c-bench-corpus.jsonl)
docs=$(wc -l < /tmp/dsv3c-bench-corpus.jsonl)
mb=$(python3 -c "import os; print(round(os.path.getsize('/tmp/dsv3c-bench-corpus.jsonl')/1e6, 1))")
echo "corpus: $docs documents, $mb MB (JSONL)"
echo
echo "| implementation | documents/s | MB/s |"
echo "|---|---|---|"
echo "$full" | sed -E 's/^[0-9.]+s: ([0-9]+) documents\/s, ([0-9.]+) MB\/s.*/| dsv3c data prepare (all stages, tokenization) | \1 | \2 |/'
echo "$dedup" | sed -E 's/^[0-9.]+s: ([0-9]+) documents\/s, ([0-9.]+) MB\/s.*/| dsv3c data prepare (exact + near dedup, tokenization) | \1 | \2 |/'
python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"| Python datasketch MinHashLSH (near dedup only) | {r['docs_per_sec']:.0f} | {r['mb_per_sec']:.2f} |\")" "$py"
