#!/usr/bin/env python3
"""Generation fixtures: small random DeepseekV3 models and transformers' greedy `generate` on them,
in float64, for `dsv3c generate --hf DIR --prompt-tokens DIR/prompts.json --max-new-tokens 24
--temperature 0 --json` to match.

Usage (torch and transformers from PyPI, as for make_fixtures.py; the Rust tests only read the
committed files):

    /opt/parity/bin/python tests/parity/make_generate_fixtures.py     # writes tests/parity/generate/

Each directory holds config.json, generation_config.json and model.safetensors as `save_pretrained`
writes them, prompts.json (prompts of different lengths, one batch: 1 to 30 tokens) and expected.json: for each
prompt, the 24 tokens transformers' greedy `generate` produces (each prompt on its own, float64,
eager attention and experts, the float64 patches of make_fixtures.py; `generate` casts each step's
logits to float32 before it picks), the gap between the two best
logits at every step, and `compare_until`: the number of leading tokens before the first step whose
two best logits lie within 1e-3 of each other (where a float32 implementation may rightly choose
the other). `generate` stops at the generation config's end-of-sequence token, as transformers does.

The weights are drawn wide (make_fixtures.widen) so that logits have clear winners, and each model is
re-drawn until every token of every prompt and its continuation routes with margins of at least
MARGIN, so that a float32 router picks the experts float64 picks.
"""

import json
import os
import sys

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import BASE, MARGIN, patch_float64, routing_margins, widen  # noqa: E402

NEW_TOKENS = 24
TIE = 1e-3

# name -> config overrides
CASES = {
    "gen_qlora_groups_yarn": dict(
        q_lora_rank=24, n_group=4, topk_group=2, num_hidden_layers=3, first_k_dense_replace=1,
        max_position_embeddings=128,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32,
                             beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)),
    "gen_directq_rope": dict(
        q_lora_rank=None, n_group=1, topk_group=1, num_hidden_layers=2, first_k_dense_replace=0,
        norm_topk_prob=False, routed_scaling_factor=1.0, rope_parameters=dict(rope_type="default", rope_theta=500.0)),
    "gen_dense_tied_top3": dict(
        q_lora_rank=16, n_group=2, topk_group=1, num_hidden_layers=3, first_k_dense_replace=2,
        num_experts_per_tok=3, tie_word_embeddings=True, n_shared_experts=2,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    # Wider: 1000 ids, 8 heads, 16 experts (top-4 within 2 of 4 groups), four layers, YaRN with
    # mscale = mscale_all_dim != 1, longer prompts.
    "gen_wide_yarn_top4": dict(
        vocab_size=1000, hidden_size=64, num_attention_heads=8, num_key_value_heads=8, kv_lora_rank=32,
        q_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=16,
        num_experts_per_tok=4, n_group=4, topk_group=2, num_hidden_layers=4, first_k_dense_replace=1,
        moe_intermediate_size=24, intermediate_size=96,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=2.0, original_max_position_embeddings=64,
                             beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)),
}

# Prompt lengths per case (default: PROMPT_LENGTHS).
PROMPT_LENGTHS = [9, 3, 14, 1]
LENGTHS = {"gen_wide_yarn_top4": [5, 17, 2, 30, 11]}


def greedy(model, prompt):
    """transformers' greedy generate of one prompt: the new tokens and each step's top-2 logit gap."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, attention_mask=torch.ones_like(ids))
    new = out.sequences[0, len(prompt):].tolist()
    gaps = []
    for lg in out.logits[: len(new)]:
        top = lg[0].topk(2).values
        gaps.append((top[0] - top[1]).item())
    return new, gaps


def make(name, out_dir, seed):
    cfg = DeepseekV3Config(**{**BASE, **CASES[name]}, attn_implementation="eager", experts_implementation="eager")
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        torch.manual_seed(seed * 1000 + attempt)
        model = DeepseekV3ForCausalLM(cfg).to(torch.float32)
        widen(model, gen)
        model = model.to(torch.float64).eval()
        lengths = LENGTHS.get(name, PROMPT_LENGTHS)
        prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist() for n in lengths]
        with torch.no_grad():
            results = [greedy(model, p) for p in prompts]
        margins = [routing_margins(model, torch.tensor([p + new])) for p, (new, _) in zip(prompts, results)]
        if all(tm >= MARGIN and gm >= MARGIN for tm, gm in margins):
            break
    else:
        sys.exit(f"{name}: no draw with routing margins >= {MARGIN}")
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.to(torch.float32).save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "prompts.json"), "w") as f:
        json.dump(prompts, f)
    until = [next((i for i, g in enumerate(gaps) if g < TIE), len(gaps)) for _, gaps in results]
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"tokens": [new for new, _ in results], "top2_gaps": [gaps for _, gaps in results],
                   "compare_until": until, "max_new_tokens": NEW_TOKENS, "tie": TIE, "seed": seed,
                   "attempt": attempt, "eos_token_id": model.generation_config.eos_token_id,
                   "oracle": "transformers DeepseekV3 greedy generate, float64, each prompt alone"}, f, indent=2)
    print(f"{name}: attempt {attempt}, compared tokens {until}, lengths {[len(n) for n, _ in results]}")


def main():
    out = os.path.join(os.path.dirname(__file__), "generate")
    torch.set_default_dtype(torch.float32)
    patch_float64()
    for name in sorted(CASES):
        make(name, out, seed=2)


if __name__ == "__main__":
    main()
