#!/usr/bin/env bash
# data prepare benchmark: dsv3c (whole pipeline, and dedup only) beside Python datasketch MinHash LSH
# on the same synthetic corpus, each run RUNS times (default 3; median and range reported, these
# machines are noisy). Prints a Markdown report (machine, versions, command, corpus, table) to stdout;
# commit it verbatim under bench/results/. Progress on stderr.
#   bench/data-prepare.sh [DISTINCT_DOCS] [PYTHON] > report.md   (PYTHON needs datasketch)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
PY=${2:-/opt/parity/bin/python}
RUNS=${RUNS:-3}
"$PY" -c 'import datasketch' 2>/dev/null || { echo "$PY cannot import datasketch: pip install datasketch" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --release -q --bin dsv3c
cargo run --release -q -p dsv3c-data --example synth_corpus -- "$tmp/corpus.jsonl" "$N" > /dev/null
cat > "$tmp/dedup-only.yaml" <<'YAML'
clean: {enabled: false}
quality: {enabled: false}
YAML
# One dsv3c run: documents/s and MB/s from the stats.json it writes.
ours() {
  rm -rf "$tmp/out"
  ./target/release/dsv3c data prepare --input "$tmp/corpus.jsonl" --out "$tmp/out" "$@" > /dev/null
  "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({"docs_per_sec": s["documents_in"]/s["seconds"], "mb_per_sec": s["bytes_in"]/1e6/s["seconds"], "kept": s["documents_out"]}))' "$tmp/out/stats.json"
}
: > "$tmp/full.jsonl"; : > "$tmp/dedup.jsonl"; : > "$tmp/py.jsonl"
for i in $(seq "$RUNS"); do
  echo "run $i/$RUNS" >&2
  ours >> "$tmp/full.jsonl"
  ours --config "$tmp/dedup-only.yaml" >> "$tmp/dedup.jsonl"
  "$PY" bench/datasketch_minhash.py "$tmp/corpus.jsonl" >> "$tmp/py.jsonl"
done
echo "# data prepare: dsv3c vs Python datasketch"
echo
source bench/machine.sh
echo "- python: $("$PY" --version 2>&1), datasketch $("$PY" -c 'import datasketch; print(datasketch.__version__)'); rayon on $(nproc) threads"
echo "- command: \`bench/data-prepare.sh $*\` (RUNS=$RUNS)"
echo "- corpus: \`synth_corpus $N\`: $(wc -l < "$tmp/corpus.jsonl") documents, $("$PY" -c "import os; print(round(os.path.getsize('$tmp/corpus.jsonl')/1e6, 1))") MB JSONL —"
echo "  $N distinct (120–320 words over a ~240-word vocabulary), 15% exact copies, 15% near copies"
echo "  (1% of words replaced), 15% distinct junk"
echo "- settings: MinHash 128 permutations, Jaccard 0.8 (LSH 9 bands × 13 rows), 3-word shingles of the"
echo "  lower-cased text, first document of a cluster kept. datasketch: MinHash + MinHashLSH (query, then"
echo "  insert), near-duplicate removal only — no cleaning, filtering or tokenization."
echo
"$PY" - "$tmp" "$RUNS" <<'PYEOF'
import json, statistics, sys
tmp, runs = sys.argv[1], int(sys.argv[2])
rows = [("dsv3c data prepare (all stages: clean, exact + near dedup, quality, GPT-2 tokenization, shards)", "full"),
        ("dsv3c data prepare (exact + near dedup, tokenization, shards)", "dedup"),
        ("Python datasketch MinHashLSH (near dedup only)", "py")]
print(f"| implementation | documents/s, median of {runs} | range | MB/s (median) | documents kept |")
print("|---|---:|---:|---:|---:|")
for name, key in rows:
    rs = [json.loads(l) for l in open(f"{tmp}/{key}.jsonl")]
    d = sorted(r["docs_per_sec"] for r in rs)
    mb = statistics.median(r["mb_per_sec"] for r in rs)
    print(f"| {name} | {statistics.median(d):.0f} | {d[0]:.0f}–{d[-1]:.0f} | {mb:.2f} | {rs[0]['kept']} |")
PYEOF
