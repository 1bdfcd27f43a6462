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
router, the rotary cos/sin, the eager softmax, and `ForCausalLMLoss`, which upcasts the logits
to float32); those are patched below to keep the model's dtype, and the cross-entropy is taken
here in float64 from the float64 logits (checked against transformers' own loss to 1e-5), so the
oracle is float64 end to end while following transformers' equations exactly. The rotary inverse
frequencies are computed by transformers at init in float32, as always. The patched router is
checked against transformers' unpatched one (which computes in float32) on every fixture: both
must pick the same experts for every token, or the script fails.

`--formats` writes tests/parity/formats/ instead: one model wide enough for FP8's 128 x 128
weight blocks (ragged edge blocks included), saved as a real checkpoint would be — bf16 and f16
(`save_pretrained`), FP8 E4M3 with `weight_scale_inv` and a `quantization_config` (DeepSeek-V3's
layout), bf16 sharded with `model.safetensors.index.json`, and bf16 as transformers 5's in-memory
state dict (fused `mlp.experts.gate_up_proj`) — with transformers' float64 loss on exactly the
stored values in formats/expected.json.

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


UNPATCHED_ROUTER = hf.DeepseekV3TopkRouter.forward


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


def unpatched_router_agrees(model, input_ids):
    """Whether transformers' own router (float32) picks the same experts as the float64 patch."""
    calls = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: calls.append((mod, inp[0], out[2])))
             for m in model.modules() if isinstance(m, hf.DeepseekV3TopkRouter)]
    with torch.no_grad():
        model(input_ids)
    for h in hooks:
        h.remove()
    assert calls, "no MoE layer"
    for mod, hidden, picked in calls:
        theirs = UNPATCHED_ROUTER(mod, hidden)[2]
        if not torch.equal(picked.sort(dim=-1)[0], theirs.sort(dim=-1)[0]):
            return False
    return True


def float64_loss(model, ids):
    """Next-token cross-entropy in float64 from the float64 logits (transformers' ForCausalLMLoss
    upcasts to float32 only): checked against transformers' loss, then returned."""
    logits = model(ids).logits
    assert logits.dtype == torch.float64
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    with torch.no_grad():
        theirs = model(ids, labels=ids).loss
    assert abs(theirs.item() - loss.item()) < 1e-5 * abs(loss.item()), (theirs.item(), loss.item())
    return loss


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
    if not unpatched_router_agrees(model, ids):
        sys.exit(f"{name}: transformers' unpatched router picks other experts than the float64 patch")
    model.zero_grad()
    loss = float64_loss(model, ids)
    loss.backward()

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.to(torch.float32).save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(ids.tolist(), f)
    with open(os.path.join(d, "expected.json"), "w") as f:
        finite = lambda x: x if math.isfinite(x) else None  # no groups to choose: no margin
        json.dump({"loss": loss.item(), "tokens": batch * seq, "topk_margin": finite(tm), "group_margin": finite(gm),

                   "seed": seed, "attempt": attempt, "unpatched_router_agrees": True,
                   "loss_oracle": "float64 cross-entropy of float64 logits"}, f, indent=2)
    save_file(per_expert_grads(model), os.path.join(d, "grads.safetensors"))
    print(f"{name}: loss {loss.item():.10f}, margins top-k {tm:.2e} group {gm:.2e}, attempt {attempt}")


# One model for the checkpoint formats: matrices wider than one 128 x 128 FP8 block, with ragged
# edge blocks (160 = 128 + 32, 136, 144, 288 = 2 x 128 + 32).
FORMATS = dict(vocab_size=96, hidden_size=160, intermediate_size=288, moe_intermediate_size=136,
               num_attention_heads=4, num_key_value_heads=4, q_lora_rank=144, kv_lora_rank=136,
               qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4,
               n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
               num_hidden_layers=2, first_k_dense_replace=1)
FP8_BLOCK = 128
FP8_MAX = 448.0


def per_expert_state(model):
    """The model's state dict under the names save_pretrained writes (experts one by one)."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix, inter = name[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return {k: v.contiguous() for k, v in out.items()}


def load_per_expert_state(model, state):
    """Copies a per-expert state dict (any dtype) into the model, fusing experts back."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("mlp.experts.gate_up_proj"):
                prefix = name[: -len("gate_up_proj")]
                for e in range(t.shape[0]):
                    t[e].copy_(torch.cat([state[f"{prefix}{e}.gate_proj.weight"], state[f"{prefix}{e}.up_proj.weight"]]))
            elif name.endswith("mlp.experts.down_proj"):
                prefix = name[: -len("down_proj")]
                for e in range(t.shape[0]):
                    t[e].copy_(state[f"{prefix}{e}.down_proj.weight"])
            else:
                t.copy_(state[name])


def is_fp8_weight(name, t):
    """DeepSeek-V3's FP8 release quantizes every linear projection of attention and the MLPs; the
    embedding, the head, norms and the router stay in higher precision."""
    return t.dim() == 2 and name.endswith("_proj.weight") and name.startswith("model.layers.")


def quantize_fp8(w):
    """E4M3 values and f32 `weight_scale_inv` per 128 x 128 block (amax / 448): w ~ q * scale_inv."""
    rows, cols = w.shape
    br, bc = -(-rows // FP8_BLOCK), -(-cols // FP8_BLOCK)
    scale = torch.zeros(br, bc, dtype=torch.float32)
    q = torch.zeros(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(br):
        for j in range(bc):
            blk = w[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK].to(torch.float32)
            s = (blk.abs().max() / FP8_MAX).clamp(min=1e-12)
            scale[i, j] = s
            q[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = (blk / s).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_fp8(q, scale):
    full = scale.to(torch.float64).repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)
    return q.to(torch.float64) * full[: q.shape[0], : q.shape[1]]


def make_formats(out_dir, seed):
    import copy
    cfg = DeepseekV3Config(**{**BASE, **FORMATS}, attn_implementation="eager", experts_implementation="eager")
    batch, seq = 2, 8
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        torch.manual_seed(seed * 1000 + attempt)
        model = DeepseekV3ForCausalLM(cfg).to(torch.float32)
        widen(model, gen)
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
        # The stored values of each format, and a float64 model holding exactly them.
        stored, oracles = {}, {}
        for fmt, dt in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
            stored[fmt] = copy.deepcopy(model).to(dt)
            # The stored tensors, not the rounded rotary frequencies (a non-persistent buffer that
            # a loader recomputes in float32).
            oracles[fmt] = copy.deepcopy(model).to(torch.float64)
            oracles[fmt].load_state_dict(stored[fmt].state_dict())
        fp8_state, deq = {}, {}
        for name, t in per_expert_state(model).items():
            if is_fp8_weight(name, t):
                q, scale = quantize_fp8(t)
                fp8_state[name], fp8_state[name + "_scale_inv"] = q, scale
                deq[name] = dequantize_fp8(q, scale)
            elif name.endswith("e_score_correction_bias"):
                fp8_state[name] = t.to(torch.float32)
                deq[name] = t.to(torch.float64)
            else:
                fp8_state[name] = t.to(torch.bfloat16)
                deq[name] = t.to(torch.bfloat16).to(torch.float64)
        oracles["fp8"] = copy.deepcopy(model).to(torch.float64)
        load_per_expert_state(oracles["fp8"], deq)
        margins = [routing_margins(m, ids) for m in oracles.values()]
        if all(tm >= MARGIN and gm >= MARGIN for tm, gm in margins):
            break
    else:
        sys.exit(f"formats: no draw with routing margins >= {MARGIN}")
    root = os.path.join(out_dir)
    os.makedirs(root, exist_ok=True)
    expected = {"tokens": batch * seq, "seed": seed, "attempt": attempt,
                "loss_oracle": "transformers float64 on the stored values; float64 cross-entropy"}
    for fmt, m in oracles.items():
        if not unpatched_router_agrees(m, ids):
            sys.exit(f"formats/{fmt}: transformers' unpatched router picks other experts")
        with torch.no_grad():
            expected[fmt] = float64_loss(m, ids).item()
    # bf16 and f16 as save_pretrained writes them; bf16 also sharded, and as the fused state dict.
    for fmt in ("bf16", "f16"):
        stored[fmt].save_pretrained(os.path.join(root, fmt), safe_serialization=True)
    stored["bf16"].save_pretrained(os.path.join(root, "sharded"), safe_serialization=True, max_shard_size="200KB")
    expected["sharded"] = expected["bf16"]
    fused = os.path.join(root, "fused")
    os.makedirs(fused, exist_ok=True)
    stored["bf16"].config.save_pretrained(fused)
    save_file({k: v.contiguous() for k, v in stored["bf16"].state_dict().items()}, os.path.join(fused, "model.safetensors"))
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in stored["bf16"].state_dict()), "not fused in memory"
    expected["fused"] = expected["bf16"]
    # FP8 as DeepSeek-V3 ships it: E4M3 weights, f32 weight_scale_inv, bf16 elsewhere.
    fp8 = os.path.join(root, "fp8")
    os.makedirs(fp8, exist_ok=True)
    stored["bf16"].config.save_pretrained(fp8)
    with open(os.path.join(fp8, "config.json")) as f:
        c = json.load(f)
    c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    with open(os.path.join(fp8, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    save_file(fp8_state, os.path.join(fp8, "model.safetensors"))
    with open(os.path.join(root, "tokens.json"), "w") as f:
        json.dump(ids.tolist(), f)
    with open(os.path.join(root, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
    for k in ("bf16", "f16", "fp8"):
        print(f"formats/{k}: loss {expected[k]:.10f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "fixtures"))
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", action="store_true", help="write tests/parity/formats/ (or --out) instead")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    patch_float64()
    if args.formats:
        out = args.out if args.out != ap.get_default("out") else os.path.join(os.path.dirname(__file__), "formats")
        make_formats(out, args.seed)
        return
    for name in args.only or sorted(CASES):
        make(name, args.out, args.seed)


if __name__ == "__main__":
    main()
