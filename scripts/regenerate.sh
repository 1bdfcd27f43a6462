#!/usr/bin/env bash
# Rewrites generated/ with today's compiler: tiny at its training shape (8 x 64, configs/tiny.yaml),
# 1b and 671b at one sequence of 4096 tokens, and the decode programs of tiny and 671b. CI checks generated/
# is fresh (tests/generated.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
./target/release/dsv3c compile spec/tiny.yaml --batch 8 --seq 64 --out generated/tiny
./target/release/dsv3c compile spec/1b.yaml --out generated/1b
./target/release/dsv3c compile spec/671b.yaml --out generated/671b
# The decode programs (prefill, decode steps over bf16 and FP8 caches, MTP verify) at the defaults.
./target/release/dsv3c compile spec/tiny.yaml --decode --out generated/tiny/decode
./target/release/dsv3c compile spec/671b.yaml --decode --out generated/671b/decode
