#!/usr/bin/env bash
# Sourced by the bench scripts: prints the Markdown lines that say where and with what a report was
# made (date, CPU model and cores, memory, GPU if any, rustc, the commit measured). One place for it.
echo "- date: $(date -u +%Y-%m-%d)"
echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
echo "- CPU vector extensions: $(grep -m1 -o -w 'avx2\|fma\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
else
  echo "- GPU: none"
fi
echo "- rustc: $(rustc --version)"
echo "- dsv3c: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
