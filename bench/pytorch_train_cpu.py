#!/usr/bin/env python3
"""PyTorch (transformers' DeepseekV3) on the CPU: tokens/s of a full training step (forward,
backward, AdamW) for the model `dsv3c bench train --hf-comparable` runs — the config is
`dsv3c export-hf` of the spec, without MTP — at the same batch shape and thread count.

    /opt/parity/bin/python bench/pytorch_train_cpu.py CONFIG_JSON --batch 8 --seq 64 --threads 2
"""

import argparse
import json
import statistics
import time

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--experts", default="eager", choices=["eager", "grouped_mm", "batched_mm"])
ap.add_argument("--compile", action="store_true")
ap.add_argument("--bf16", action="store_true", help="bf16 autocast: f32 weights, bf16 matmuls (dsv3c's bf16 compute)")
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
raw = json.load(open(args.config))
raw.pop("dsv3c", None)
raw["num_nextn_predict_layers"] = 0
cfg = DeepseekV3Config(**raw, attn_implementation="eager", experts_implementation=args.experts)
model = DeepseekV3ForCausalLM(cfg).to(torch.float32).train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
step_fn = model
if args.compile:
    step_fn = torch.compile(model)
ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))


def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        loss = step_fn(ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


for _ in range(2):
    step()
times = []
for _ in range(args.steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
med = statistics.median(times)
tok = args.batch * args.seq
print(json.dumps({"torch": torch.__version__, "experts": args.experts, "compile": args.compile, "bf16": args.bf16, "threads": args.threads,
                  "tokens_per_step": tok, "median_step_s": med, "tokens_per_sec": tok / med}))
