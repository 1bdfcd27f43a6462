#!/usr/bin/env bash
# The table of inputs tried per parser of user input (tests/fuzz): runs the fuzz suite with CASES
# cases per kind of input (default 5000; CI runs 2000) and prints a Markdown report (machine,
# versions, command, table) to stdout; commit it verbatim under bench/results/. Progress on stderr.
#   bench/fuzz-table.sh [CASES] > report.md
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-5000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
DSV3C_FUZZ_CASES=$CASES DSV3C_FUZZ_TABLE="$tmp" cargo test --locked -q --test fuzz -- --test-threads 2 >&2
secs=$(( $(date +%s) - start ))
echo "# Fuzzing every parser of user input"
echo
source bench/machine.sh
echo "- command: \`bench/fuzz-table.sh $CASES\` (\`DSV3C_FUZZ_CASES=$CASES cargo test --test fuzz\`, the dev profile CI uses), ${secs} s with the build"
echo
echo "Each parser gets its valid files edited (bit flips, truncations, deletions, insertions, splices, a word"
echo "swapped for a hostile value: integer limits, NaN/inf in YAML and JSON spellings, anchors, tags, deep"
echo "nesting, invalid UTF-8); YAML and JSON documents with values replaced (integer limits, NaN, infinities,"
echo "empty and huge containers) or keys removed; inputs generated from the binary formats' header fields"
echo "(lying lengths, shapes, offsets, dtypes); and hand-written hostile inputs. $CASES cases per kind, a fixed seed. A case fails on a panic, on taking"
echo "over 20 s, on one allocation over 256 bytes per input byte + 8 MiB, or on an error that does not name"
echo "the file. *Largest alloc.* is the largest single allocation over (input bytes + 1 KiB)."
echo
echo "| parser | entry point | seeds | hostile | cases | accepted | rejected | panics / hangs | slowest (ms) | largest alloc. / input | shortest error seen |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
cat "$tmp"/*.row
