#!/usr/bin/env python3
"""Parity fixtures: small random DeepseekV3 models from Hugging Face transformers, computed in
float64, with their loss and every parameter's gradient.

Usage (torch and transformers from PyPI; they are needed only to regenerate fixtures, never by
the Rust tests, which read the committed files):

    python3 -m venv /opt/parity && /opt/parity/bin/pip install torch transformers safetensors numpy
    /opt/parity/bin/python tests/parity/make_fixtures.py            # writes tests/parity/fixtures/
    /opt/parity/bin/python tests/parity/make_fixtures.py --out DIR --only NAME --seed 7

Each fixture directory holds what `dsv3c eval --hf DIR --tokens DIR/tokens.json` reads —
config.json and model.safetensors as `save_pretrained` writes them (experts stored per expert) —
plus expected.json (loss, token count, routing margins) and grads.safetensors (d loss / d
parameter under the same HF names, for every trainable parameter).

The oracle is transformers' DeepseekV3 (eager attention, eager experts) with every computation in
float64. transformers casts to float32 in a few places even in a float64 model (RMSNorm, the
router, the rotary cos/sin, the eager softmax); those are patched below to keep the model's dtype,
so the oracle is float64 end to end while following transformers' equations exactly. The rotary
inverse frequencies are computed by transformers at init in float32, as always.

HF's default init (std 0.02) barely exercises routing, so weights are drawn wider, norm weights
are perturbed around 1, and the router's correction bias is random. Routing is discrete: each
fixture is re-drawn until every token's k-th and (k+1)-th expert scores, and its last kept and
first dropped group scores, differ by at least MARGIN, so a float32 implementation must pick the
same experts.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf

MARGIN = 1e-4

# name -> (config overrides, batch, seq)
CASES = {
    # q-LoRA, 4 groups (top-2 groups), YaRN, one dense layer then MoE.
    "qlora_groups_yarn": (
        dict(q_lora_rank=24, n_group=4, topk_group=2, num_hidden_layers=3, first_k_dense_replace=1,
             rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=8.0, original_max_position_embeddings=16,
                                  beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)),
        2, 12),
    # Direct q projection, one group, plain RoPE, no top-k normalization, two MoE layers.
    "directq_onegroup_rope": (
        dict(q_lora_rank=None, n_group=1, topk_group=1, num_hidden_layers=2, first_k_dense_replace=0,
             norm_topk_prob=False, routed_scaling_factor=1.0,
             rope_parameters=dict(rope_type="default", rope_theta=500.0)),
        3, 9),
    # Two dense layers then MoE, 2 groups (top-1 group), YaRN with mscale != mscale_all_dim (cos/sin
    # scaled), tied embeddings, top-3 experts.
    "dense_tied_mscale": (
        dict(q_lora_rank=16, n_group=2, topk_group=1, num_hidden_layers=3, first_k_dense_replace=2,
             num_experts_per_tok=3, tie_word_embeddings=True, n_shared_experts=2,
             rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=8,
                                  beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=0.8)),
        2, 10),
}

BASE = dict(
    vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
    num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
    num_experts_per_tok=2, routed_scaling_factor=2.5, norm_topk_prob=True,
    kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
    max_position_embeddings=128, rms_norm_eps=1e-6, rope_interleave=True,
    tie_word_embeddings=False, num_nextn_predict_layers=0, initializer_range=0.02,
)


def patch_float64():
    """Keep the model dtype where transformers casts to float32."""

    def rmsnorm_forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    hf.DeepseekV3RMSNorm.forward = rmsnorm_forward

    def rotary_forward(self, x, position_ids):
        freqs = position_ids[..., None].to(x.dtype) * self.inv_freq.to(device=x.device, dtype=x.dtype)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    hf.DeepseekV3RotaryEmbedding.forward = rotary_forward

    def router_forward(self, hidden_states):
        # transformers' DeepseekV3TopkRouter.forward, with `.type(torch.float32)` dropped.
        hidden_states = hidden_states.view(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)
        scores = router_logits.sigmoid()
        scores_for_choice = scores + self.e_score_correction_bias
        group_scores = (
            scores_for_choice.view(-1, self.num_group, self.num_experts // self.num_group).topk(2, dim=-1)[0].sum(dim=-1)
        )
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1).expand(-1, self.num_group, self.num_experts // self.num_group).reshape(-1, self.num_experts)
        )
        scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), float("-inf"))
        topk_indices = torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]
        topk_weights = scores.gather(1, topk_indices)
        if self.norm_topk_prob:
            topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
        return router_logits, topk_weights * self.routed_scaling_factor, topk_indices

    hf.DeepseekV3TopkRouter.forward = router_forward

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        w = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = F.softmax(w, dim=-1)
        return torch.matmul(w, value).transpose(1, 2).contiguous(), w

    hf.eager_attention_forward = eager_attention


def routing_margins(model, input_ids):
    """Smallest top-k and group margins over all tokens and MoE layers (float64)."""
    logits = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: logits.append((mod, out[0])))
             for m in model.modules() if isinstance(m, hf.DeepseekV3TopkRouter)]
    with torch.no_grad():
        model(input_ids)
    for h in hooks:
        h.remove()
    topk_margin, group_margin = math.inf, math.inf
    for mod, lg in logits:
        sel = lg.sigmoid() + mod.e_score_correction_bias
        e, g, k, tg = mod.num_experts, mod.num_group, mod.top_k, mod.topk_group
        per = e // g
        if g > 1:
            gs = sel.view(-1, g, per).topk(2, dim=-1)[0].sum(-1).sort(dim=-1, descending=True)[0]
            if tg < g:
                group_margin = min(group_margin, (gs[:, tg - 1] - gs[:, tg]).min().item())
            keep = torch.topk(sel.view(-1, g, per).topk(2, dim=-1)[0].sum(-1), tg, dim=-1)[1]
            mask = torch.zeros(sel.shape[0], g, dtype=torch.bool).scatter_(1, keep, True)
            sel = sel.masked_fill(~mask.unsqueeze(-1).expand(-1, g, per).reshape(-1, e), -math.inf)
        ranked = sel.sort(dim=-1, descending=True)[0]
        if k < ranked.shape[1] and torch.isfinite(ranked[:, k]).all():
            topk_margin = min(topk_margin, (ranked[:, k - 1] - ranked[:, k]).min().item())
    return topk_margin, group_margin


def widen(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif "gate.weight" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=b.dtype))


def per_expert_grads(model):
    """Gradients under the names save_pretrained writes (experts stored one by one)."""
    out = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g = p.grad.detach()
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            inter = g.shape[1] // 2
            for e in range(g.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = g[e, :inter]
                out[f"{prefix}{e}.up_proj.weight"] = g[e, inter:]
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(g.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = g[e]
        else:
            out[name] = g
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def make(name, out_dir, seed):
    overrides, batch, seq = CASES[name]
    cfg = DeepseekV3Config(**{**BASE, **overrides}, attn_implementation="eager", experts_implementation="eager")
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        torch.manual_seed(seed * 1000 + attempt)
        model = DeepseekV3ForCausalLM(cfg).to(torch.float32)
        widen(model, gen)
        # The fixture's weights are float32; the oracle runs on exactly those values in float64.
        model = model.to(torch.float64)
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
        tm, gm = routing_margins(model, ids)
        if tm >= MARGIN and gm >= MARGIN:
            break
    else:
        sys.exit(f"{name}: no draw with routing margins >= {MARGIN}")
    model.zero_grad()
    loss = model(ids, labels=ids).loss
    loss.backward()

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.to(torch.float32).save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(ids.tolist(), f)
    with open(os.path.join(d, "expected.json"), "w") as f:
        finite = lambda x: x if math.isfinite(x) else None  # no groups to choose: no margin
        json.dump({"loss": loss.item(), "tokens": batch * seq, "topk_margin": finite(tm), "group_margin": finite(gm),

                   "seed": seed, "attempt": attempt}, f, indent=2)
    save_file(per_expert_grads(model), os.path.join(d, "grads.safetensors"))
    print(f"{name}: loss {loss.item():.10f}, margins top-k {tm:.2e} group {gm:.2e}, attempt {attempt}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "fixtures"))
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    patch_float64()
    for name in args.only or sorted(CASES):
        make(name, args.out, args.seed)


if __name__ == "__main__":
    main()
