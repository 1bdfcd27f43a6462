#!/usr/bin/env python3
"""The machine's f32 GEMM rate on the CPU: PyTorch's matmul (its BLAS) on square n x n x n
products at a thread count, median of repeats after a warm-up, on random (never zero) operands.
Prints one JSON line: {"n", "threads", "median_s", "gflops", "blas"}.

    /opt/parity/bin/python bench/gemm_rate.py --threads 2 --n 2048
"""

import argparse
import json
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=2048)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=10)
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
c = a @ b
times = []
for _ in range(args.repeats):
    t = time.perf_counter()
    torch.matmul(a, b, out=c)
    times.append(time.perf_counter() - t)
med = statistics.median(times)
blas = "mkl" if torch.backends.mkl.is_available() else "other"
print(json.dumps({"n": args.n, "threads": args.threads, "median_s": med, "gflops": 2 * args.n**3 / med / 1e9, "blas": blas}))
