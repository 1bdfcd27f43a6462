#!/usr/bin/env python3
"""PyTorch (transformers' DeepseekV3) on a GPU: tokens/s and MFU of a full training step (forward,
backward, clipping, AdamW) for the model `dsv3c bench train --hf-comparable` runs — the config is
`dsv3c export-hf` of the spec, without MTP — at the same batch shape, f32 master weights under bf16
autocast. Timed with CUDA events after warm-up, the median of N steps; eager and `--compile`.

    python bench/pytorch_train_gpu.py CONFIG_JSON --batch 1 --seq 4096 [--compile] [--flops-per-token F]
"""

import argparse
import json
import statistics

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--seq", type=int, default=4096)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--compile", action="store_true")
ap.add_argument("--flops-per-token", type=float, default=0.0, help="training FLOPs per token, for MFU")
ap.add_argument("--peak", type=float, default=989.4e12, help="dense bf16 FLOP/s of the GPU")
args = ap.parse_args()

torch.manual_seed(0)
raw = json.load(open(args.config))
raw.pop("dsv3c", None)
raw["num_nextn_predict_layers"] = 0
try:
    cfg = DeepseekV3Config(**raw, attn_implementation="sdpa", experts_implementation="grouped_mm")
except TypeError:
    cfg = DeepseekV3Config(**raw, attn_implementation="sdpa")
model = DeepseekV3ForCausalLM(cfg).to("cuda", torch.float32).train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
step_fn = torch.compile(model) if args.compile else model
ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")


def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = step_fn(ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


for _ in range(3):
    step()
torch.cuda.synchronize()
times = []
for _ in range(args.steps):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    step()
    b.record()
    torch.cuda.synchronize()
    times.append(a.elapsed_time(b) / 1e3)
med = statistics.median(times)
tok = args.batch * args.seq
out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "compile": args.compile,
       "tokens_per_step": tok, "median_step_s": med, "tokens_per_sec": tok / med}
if args.flops_per_token:
    out["mfu"] = args.flops_per_token * tok / med / args.peak
print(json.dumps(out))
