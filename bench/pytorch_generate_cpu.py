#!/usr/bin/env python3
"""transformers' greedy `generate` on the CPU for the generation benchmark (bench/cpu-generate.sh):
makes a random DeepseekV3 from CONFIG (seeded), saves it to OUT (so that dsv3c reads the same weights),
writes the prompts (batch B of P random tokens) to OUT/prompts-B.json, and times prefill and decode.

    python bench/pytorch_generate_cpu.py CONFIG OUT --batch 8 --prompt 32 --new 64 --threads 2

Prefill is the median time of `generate(max_new_tokens=1)`; decode tokens/s is batch · (new − 1)
over the median of `generate(max_new_tokens=new)` minus that. Greedy, end-of-sequence off, float32,
transformers' default attention and experts. Prints one JSON line."""

import argparse
import json
import os
import statistics
import time

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if not os.path.exists(os.path.join(a.out, "model.safetensors")):
        cfg = DeepseekV3Config(**json.load(open(a.config)))
        cfg.initializer_range = 0.1  # wide enough that greedy tokens are not all one id
        model = DeepseekV3ForCausalLM(cfg).eval()
        model.save_pretrained(a.out, safe_serialization=True)
    model = DeepseekV3ForCausalLM.from_pretrained(a.out, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(a.batch)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.prompt), generator=g)
    with open(os.path.join(a.out, f"prompts-{a.batch}.json"), "w") as f:
        json.dump(ids.tolist(), f)

    def run(new):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        return time.perf_counter() - t, out

    run(2)  # warm-up
    t1 = statistics.median(run(1)[0] for _ in range(a.repeats))
    times, out = [], None
    for _ in range(a.repeats):
        t, out = run(a.new)
        times.append(t)
    tn = statistics.median(times)
    print(json.dumps({
        "prefill_tokens_per_sec": a.batch * a.prompt / t1,
        "decode_tokens_per_sec": a.batch * (a.new - 1) / max(tn - t1, 1e-9),
        "tokens": out[:, a.prompt:].tolist(),
    }))


if __name__ == "__main__":
    main()
