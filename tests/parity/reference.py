#!/usr/bin/env python3
"""A float64 PyTorch reference of what transformers' DeepseekV3 lacks, written from the equations
of shared/reference/deepseek-v3.md and the spec reference in README.md: multi-token prediction,
sliding-window attention with sink tokens, DynamicTanh, the sequence-wise balance loss, softmax
router scores. It writes fixtures that tests/parity.rs runs through the compiled Program.

    /opt/parity/bin/python tests/parity/reference.py      # writes tests/parity/own/

Semantics (the spec's, stated where the papers leave room):
- MTP module k (1-based) sees position i with token t_{i+k} (the sequence's last token past the
  end) and h^{k-1}_i (h^0 = the main model's final-normed hidden state); x = eh_proj([enorm(emb) ;
  hnorm(h)]); one decoder layer (MLA attention, MoE FFN when the model has MoE); logits =
  head(shared_head.norm(h^k)); cross-entropy against t_{i+k+1} over positions with i+k+1 < T.
  The total loss adds (λ/D)·Σ_k L_k.
- Balance loss per MoE layer (MTP layers included): for each sequence, f_i = E/(K·T)·#tokens
  routed to i, P_i = mean_t s'_{i,t} with s' = s/Σ_j s (sigmoid) or s (softmax); α·Σ f_i P_i,
  averaged over sequences, added to the total loss. f counts the experts the router chose.
- Sliding window: query i sees key j iff j <= i and (i - j < window or j < sink_tokens).
- DynamicTanh: w * tanh(alpha * x) + b, alpha one learned scalar per norm.
"""

import json
import math
import os

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)
MARGIN = 1e-4

SPECS = {
    "mtp_balance": dict(
        name="mtp_balance", vocab_size=80, d_model=32, n_layers=2, max_seq_len=64, init_std=0.15,
        norm=dict(type="rmsnorm", eps=1e-6), dense=dict(n_layers=1, intermediate_size=40),
        attention=dict(mla=dict(n_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                                v_head_dim=8, rope_theta=10000.0), pattern=["mla"]),
        moe=dict(n_routed_experts=8, n_shared_experts=1, top_k=2, moe_intermediate_size=12, score_func="sigmoid",
                 n_group=4, top_groups=2, route_scale=2.5, norm_topk_prob=True, bias_update_speed=0.001,
                 seq_aux_alpha=0.05),
        mtp=dict(depth=2, loss_weight=0.3), batch=2, seq=10),
    "swa_dyt_softmax": dict(
        name="swa_dyt_softmax", vocab_size=64, d_model=24, n_layers=3, max_seq_len=32, init_std=0.15,
        norm=dict(type="dyt", alpha_init=0.6), dense=dict(n_layers=1, intermediate_size=32),
        attention=dict(mla=dict(n_heads=3, q_lora_rank=0, kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=4,
                                v_head_dim=6, rope_theta=500.0),
                       swa=dict(window=3, sink_tokens=1), pattern=["swa", "mla"]),
        moe=dict(n_routed_experts=6, n_shared_experts=0, top_k=3, moe_intermediate_size=10, score_func="softmax",
                 n_group=2, top_groups=2, route_scale=1.5, norm_topk_prob=False, bias_update_speed=0.0,
                 seq_aux_alpha=0.1),
        mtp=dict(depth=1, loss_weight=0.5), batch=2, seq=9),
}


def inv_freq(theta, dim):
    # As transformers computes it: float32.
    return (1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))).to(torch.float64)


def rope(x, pos, freqs):
    # x [..., T, dim] interleaved pairs -> [evens rotated | odds rotated] (HF's layout).
    ang = pos[:, None].to(torch.float64) * freqs[None, :]
    cos, sin = ang.cos(), ang.sin()
    e, o = x[..., 0::2], x[..., 1::2]
    return torch.cat([e * cos - o * sin, o * cos + e * sin], dim=-1)


class Model:
    def __init__(self, spec, gen):
        self.s, self.p, self.buffers = spec, {}, {}
        std = spec["init_std"]
        self.gen = gen

        def mat(name, o, i):
            self.p[name + ".weight"] = (std * torch.randn(o, i, generator=gen)).float().double().requires_grad_()

        def norm(name, d):
            if spec["norm"]["type"] == "rmsnorm":
                self.p[name + ".weight"] = (1 + 0.2 * torch.randn(d, generator=gen)).float().double().requires_grad_()
            else:
                self.p[name + ".weight"] = (1 + 0.2 * torch.randn(d, generator=gen)).float().double().requires_grad_()
                self.p[name + ".bias"] = (0.1 * torch.randn(d, generator=gen)).float().double().requires_grad_()
                self.p[name + ".alpha"] = torch.tensor([spec["norm"]["alpha_init"]]).requires_grad_()

        d, v = spec["d_model"], spec["vocab_size"]
        m = spec["attention"]["mla"]
        self.p["model.embed_tokens.weight"] = (std * torch.randn(v, d, generator=gen)).float().double().requires_grad_()

        def layer(prefix, moe):
            norm(prefix + ".input_layernorm", d)
            h, dn, dr, dv, qr, kvr = m["n_heads"], m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"], m["q_lora_rank"], m["kv_lora_rank"]
            if qr:
                mat(prefix + ".self_attn.q_a_proj", qr, d)
                norm(prefix + ".self_attn.q_a_layernorm", qr)
                mat(prefix + ".self_attn.q_b_proj", h * (dn + dr), qr)
            else:
                mat(prefix + ".self_attn.q_proj", h * (dn + dr), d)
            mat(prefix + ".self_attn.kv_a_proj_with_mqa", kvr + dr, d)
            norm(prefix + ".self_attn.kv_a_layernorm", kvr)
            mat(prefix + ".self_attn.kv_b_proj", h * (dn + dv), kvr)
            mat(prefix + ".self_attn.o_proj", d, h * dv)
            norm(prefix + ".post_attention_layernorm", d)
            if moe:
                e = spec["moe"]
                self.p[prefix + ".mlp.gate.weight"] = (0.5 * torch.randn(e["n_routed_experts"], d, generator=gen)).float().double().requires_grad_()
                self.buffers[prefix + ".mlp.gate.e_score_correction_bias"] = (0.05 * torch.randn(e["n_routed_experts"], generator=gen)).float().double()
                for x in range(e["n_routed_experts"]):
                    mat(f"{prefix}.mlp.experts.{x}.gate_proj", e["moe_intermediate_size"], d)
                    mat(f"{prefix}.mlp.experts.{x}.up_proj", e["moe_intermediate_size"], d)
                    mat(f"{prefix}.mlp.experts.{x}.down_proj", d, e["moe_intermediate_size"])
                si = e["n_shared_experts"] * e["moe_intermediate_size"]
                if si:
                    mat(prefix + ".mlp.shared_experts.gate_proj", si, d)
                    mat(prefix + ".mlp.shared_experts.up_proj", si, d)
                    mat(prefix + ".mlp.shared_experts.down_proj", d, si)
            else:
                i = spec["dense"]["intermediate_size"]
                mat(prefix + ".mlp.gate_proj", i, d)
                mat(prefix + ".mlp.up_proj", i, d)
                mat(prefix + ".mlp.down_proj", d, i)

        nd = spec["dense"]["n_layers"] if "dense" in spec else 0
        for l in range(spec["n_layers"]):
            layer(f"model.layers.{l}", l >= nd)
        norm("model.norm", d)
        mat("lm_head", v, d)
        for k in range(1, spec["mtp"]["depth"] + 1):
            pre = f"model.layers.{spec['n_layers'] + k - 1}"
            norm(pre + ".enorm", d)
            norm(pre + ".hnorm", d)
            mat(pre + ".eh_proj", d, 2 * d)
            layer(pre, True)
            norm(pre + ".shared_head.norm", d)
        self.margins = [math.inf, math.inf]

    def norm(self, name, x):
        if self.s["norm"]["type"] == "rmsnorm":
            return self.p[name + ".weight"] * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.s["norm"]["eps"])
        return self.p[name + ".weight"] * torch.tanh(self.p[name + ".alpha"] * x) + self.p[name + ".bias"]

    def lin(self, name, x):
        return x @ self.p[name + ".weight"].T

    def attention(self, pre, x, kind):
        m, (B, T, _) = self.s["attention"]["mla"], x.shape
        h, dn, dr, dv, kvr = m["n_heads"], m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"], m["kv_lora_rank"]
        if m["q_lora_rank"]:
            q = self.lin(pre + ".self_attn.q_b_proj", self.norm(pre + ".self_attn.q_a_layernorm", self.lin(pre + ".self_attn.q_a_proj", x)))
        else:
            q = self.lin(pre + ".self_attn.q_proj", x)
        q = q.view(B, T, h, dn + dr).transpose(1, 2)
        kv = self.lin(pre + ".self_attn.kv_a_proj_with_mqa", x)
        ckv, kpe = kv[..., :kvr], kv[..., kvr:]
        kvb = self.lin(pre + ".self_attn.kv_b_proj", self.norm(pre + ".self_attn.kv_a_layernorm", ckv)).view(B, T, h, dn + dv).transpose(1, 2)
        pos, f = torch.arange(T), inv_freq(m["rope_theta"], dr)
        qn, qp = q[..., :dn], rope(q[..., dn:], pos, f)
        kp = rope(kpe, pos, f)[:, None].expand(B, h, T, dr)
        Q, K, V = torch.cat([qn, qp], -1), torch.cat([kvb[..., :dn], kp], -1), kvb[..., dn:]
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allowed = j <= i
        if kind == "swa":
            w = self.s["attention"]["swa"]
            allowed = allowed & ((i - j < w["window"]) | (j < w["sink_tokens"]))
        scores = (Q @ K.transpose(-1, -2)) * (dn + dr) ** -0.5
        p = scores.masked_fill(~allowed, -math.inf).softmax(-1)
        o = (p @ V).transpose(1, 2).reshape(B, T, h * dv)
        return self.lin(pre + ".self_attn.o_proj", o)

    def swiglu(self, pre, x):
        return self.lin(pre + ".down_proj", F.silu(self.lin(pre + ".gate_proj", x)) * self.lin(pre + ".up_proj", x))

    def moe(self, pre, x):
        e, (B, T, d) = self.s["moe"], x.shape
        E, K, G, TG = e["n_routed_experts"], e["top_k"], e["n_group"], e["top_groups"]
        flat = x.reshape(B * T, d)
        logits = self.lin(pre + ".mlp.gate", flat)
        s = logits.sigmoid() if e["score_func"] == "sigmoid" else logits.softmax(-1)
        sel = (s + self.buffers[pre + ".mlp.gate.e_score_correction_bias"]).detach()
        if G > 1:
            gs = sel.view(-1, G, E // G).topk(2, -1)[0].sum(-1)
            ranked = gs.sort(-1, descending=True)[0]
            if TG < G:
                self.margins[1] = min(self.margins[1], (ranked[:, TG - 1] - ranked[:, TG]).min().item())
            keep = gs.topk(TG, -1)[1]
            mask = torch.zeros(B * T, G, dtype=torch.bool).scatter_(1, keep, True)
            sel = sel.masked_fill(~mask[:, :, None].expand(-1, G, E // G).reshape(-1, E), -math.inf)
        ranked = sel.sort(-1, descending=True)[0]
        if K < E and torch.isfinite(ranked[:, K]).all():
            self.margins[0] = min(self.margins[0], (ranked[:, K - 1] - ranked[:, K]).min().item())
        idx = sel.topk(K, -1)[1]
        w = s.gather(1, idx)
        if e["norm_topk_prob"]:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * e["route_scale"]
        out = torch.zeros_like(flat)
        for t in range(B * T):
            for slot in range(K):
                out[t] = out[t] + w[t, slot] * self.swiglu(f"{pre}.mlp.experts.{idx[t, slot].item()}", flat[t])
        if e["n_shared_experts"]:
            out = out + self.swiglu(pre + ".mlp.shared_experts", flat)
        # Sequence-wise balance loss.
        sn = s / s.sum(-1, keepdim=True) if e["score_func"] == "sigmoid" else s
        bal = 0.0
        for b in range(B):
            counts = torch.zeros(E)
            for t in range(T):
                for slot in range(K):
                    counts[idx[b * T + t, slot]] += 1
            f = counts * E / (K * T)
            P = sn[b * T:(b + 1) * T].mean(0)
            bal = bal + e["seq_aux_alpha"] * (f * P).sum()
        return out.view(B, T, d), bal / B

    def layer(self, pre, h, kind, moe):
        h = h + self.attention(pre, self.norm(pre + ".input_layernorm", h), kind)
        x = self.norm(pre + ".post_attention_layernorm", h)
        if moe:
            f, bal = self.moe(pre, x)
        else:
            f, bal = self.swiglu(pre + ".mlp", x), 0.0
        return h + f, bal

    def ce(self, logits, tokens, shift):
        B, T, V = logits.shape
        if T - shift <= 0:
            return torch.tensor(0.0)
        return F.cross_entropy(logits[:, : T - shift].reshape(-1, V), tokens[:, shift:].reshape(-1))

    def loss(self, tokens):
        s, (B, T) = self.s, tokens.shape
        pattern, nd = s["attention"]["pattern"], s["dense"]["n_layers"] if "dense" in s else 0
        h, total_bal = self.p["model.embed_tokens.weight"][tokens], 0.0
        for l in range(s["n_layers"]):
            h, bal = self.layer(f"model.layers.{l}", h, pattern[l % len(pattern)], l >= nd)
            total_bal = total_bal + bal
        hn = self.norm("model.norm", h)
        main = self.ce(self.lin("lm_head", hn), tokens, 1)
        total, prev, mtp = main + total_bal, hn, []
        D, lam = s["mtp"]["depth"], s["mtp"]["loss_weight"]
        for k in range(1, D + 1):
            pre = f"model.layers.{s['n_layers'] + k - 1}"
            shifted = torch.cat([tokens[:, k:], tokens[:, -1:].expand(B, min(k, T))], 1)[:, :T]
            e = self.norm(pre + ".enorm", self.p["model.embed_tokens.weight"][shifted])
            x = self.lin(pre + ".eh_proj", torch.cat([e, self.norm(pre + ".hnorm", prev)], -1))
            hk, bal = self.layer(pre, x, "mla", "moe" in s)
            lk = self.ce(self.lin("lm_head", self.norm(pre + ".shared_head.norm", hk)), tokens, k + 1)
            mtp.append(lk)
            total = total + lam / D * lk + bal
            prev = hk
        return total, main, mtp


def make(name, out_dir, seed=1):
    spec = dict(SPECS[name])
    batch, seq = spec.pop("batch"), spec.pop("seq")
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        model = Model(spec, gen)
        tokens = torch.randint(0, spec["vocab_size"], (batch, seq), generator=gen)
        total, main, mtp = model.loss(tokens)
        if min(model.margins) >= MARGIN:
            break
    else:
        raise SystemExit(f"{name}: no draw with routing margins >= {MARGIN}")
    total.backward()
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "spec.yaml"), "w") as f:
        f.write(f"# Written by tests/parity/reference.py: a spec exercising what transformers' DeepseekV3 lacks.\n")
        yaml.safe_dump(spec, f, sort_keys=False)
    weights = {k: v.detach().float() for k, v in model.p.items()}
    weights.update({k: v.float() for k, v in model.buffers.items()})
    save_file(weights, os.path.join(d, "model.safetensors"))
    # A parameter autograd never reached (an expert no token chose) has a zero gradient.
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)).float() for k, v in model.p.items()}
    save_file(grads, os.path.join(d, "grads.safetensors"))

    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(tokens.tolist(), f)
    fin = lambda x: x if math.isfinite(x) else None
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"loss": total.item(), "main_loss": main.item(), "mtp_losses": [m.item() for m in mtp],
                   "topk_margin": fin(model.margins[0]), "group_margin": fin(model.margins[1]), "attempt": attempt}, f, indent=2)
    print(f"{name}: total {total.item():.8f} main {main.item():.8f} mtp {[round(m.item(), 6) for m in mtp]} margins {model.margins}")


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(__file__), "own")
    for name in SPECS:
        make(name, out)
