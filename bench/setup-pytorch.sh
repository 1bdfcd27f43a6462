#!/usr/bin/env bash
# The PyTorch the CPU benchmarks compare with (bench/cpu-train.sh, bench/cpu-train-sweep.sh):
# torch and transformers from PyPI in a virtual environment, /opt/parity by default.
#   bench/setup-pytorch.sh [VENV]
set -euo pipefail
VENV=${1:-/opt/parity}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch transformers
"$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
