//! The forward graph of a DeepSeek-V3-family model, built from its spec, with Hugging Face
//! parameter names (`shared/reference/deepseek-v3.md` §2–4, §6):
//!
//! embedding → per layer: `h += o_proj(MLA(norm(h)))`, `h += FFN(norm(h))` (dense SwiGLU or
//! DeepSeekMoE) → final norm → LM head → cross-entropy; then each MTP module k:
//! `x = eh_proj([enorm(emb(t_{i+k})) ; hnorm(h^{k-1}_i)])`, one decoder layer, `shared_head.norm`,
//! the shared head, cross-entropy against `t_{i+k+1}` weighted λ/D. Balance losses of MoE layers
//! add to the total loss.

use dsv3c_runtime::op::{Attn, Balance, Cache, Heads, LatentAttn, Op, Peer, RopeFreqs, Route, Score};
use dsv3c_runtime::program::{Init, ParamGroup};
use dsv3c_spec::types::{LayerAttention, Norm, ScoreFunc, Spec};

use crate::builder::{Arg, Builder, PrecisionPolicy, Tid, WeightKind};
use crate::ops::{MoeOut, NormW, W};

/// The tensors a run reads and writes.
pub struct Outputs {
    /// Token ids of the micro-batch, when this program reads them (the first stage embeds them,
    /// the last one scores against them).
    pub tokens: Tid,
    pub reads_tokens: bool,
    pub loss: Tid,
    pub main_loss: Tid,
    pub mtp_losses: Vec<Tid>,
    pub expert_choices: Vec<Tid>,
    pub expert_scores: Vec<Tid>,
    /// Each MoE layer's routing statistics and its correction-bias parameter.
    pub expert_stats: Vec<(Tid, usize)>,
    /// Each MoE layer's rows dropped past its experts' capacity (expert parallelism with a
    /// capacity factor).
    pub expert_dropped: Vec<Tid>,
    /// The model-wide index of each MoE layer built.
    pub moe_layers: Vec<usize>,
    /// The token embedding, when the program holds it.
    pub embedding: Option<usize>,
    /// The first and the last pipeline stage both hold the token embedding (the last for its MTP
    /// modules or a tied head): their gradients are summed.
    pub ends_share_embedding: bool,
}

/// Which part of the model a program builds: a pipeline stage's layers (all of them on one
/// device), the embedding on the first stage, the head and MTP modules on the last, and the
/// routed experts of one expert-parallel shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub layers: std::ops::Range<u64>,
    pub first: bool,
    pub last: bool,
    pub experts: Option<ExpertShard>,
}

impl Stage {
    /// The whole model on one device.
    pub fn whole(s: &Spec) -> Stage {
        Stage { layers: 0..s.n_layers, first: true, last: true, experts: None }
    }
}

/// The routed experts one expert-parallel rank holds: shard `rank` of `ranks` (consecutive
/// experts), each keeping at most `capacity_factor` times the rows a balanced routing gives it
/// (none: every row however the routing falls — the worst case's buffers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertShard {
    pub ranks: usize,
    pub rank: usize,
    pub capacity_factor: Option<f64>,
}

impl ExpertShard {
    /// Rows a local expert keeps at most when each of the `ranks` ranks routes `tokens · top_k`
    /// rows over `experts` experts: every token of the group (each sends an expert one row at
    /// most), or the capacity factor's share of a balanced load.
    pub fn capacity(&self, tokens: usize, top_k: usize, experts: usize) -> usize {
        let worst = self.ranks * tokens;
        match self.capacity_factor {
            None => worst,
            Some(f) => {
                let balanced = (self.ranks * tokens * top_k) as f64 / experts.max(1) as f64;
                ((f * balanced).ceil() as usize).clamp(1, worst.max(1))
            }
        }
    }
}

/// How a decoder layer's attention reaches its keys and values.
pub enum Attend {
    /// Training: causal attention within each sequence of the micro-batch.
    Train,
    /// A decode program: `per_seq` new tokens per sequence at `positions`; their latents go into
    /// their layer's cache, then attention runs over the cache in the absorbed form, or (not
    /// `absorbed`) in the training form within the new tokens (a prefill from position 0).
    Decode { positions: Tid, per_seq: usize, cache: Cache, caches: Vec<LayerCacheT>, absorbed: bool },
}

/// One layer's cache tensors: latent, FP8 scales, roped key.
#[derive(Debug, Clone, Copy)]
pub struct LayerCacheT {
    pub latent: Tid,
    pub scales: Option<Tid>,
    pub rope: Tid,
}

impl LayerCacheT {
    pub fn args(&self) -> Vec<Arg> {
        [Some(self.latent), self.scales, Some(self.rope)].into_iter().flatten().map(Arg::T).collect()
    }
}

pub(crate) struct Ctx<'a> {
    pub s: &'a Spec,
    pub attend: Attend,
    /// The total loss, which MoE balance terms add to (none in a decode program).
    pub loss: Option<Tid>,
    pub batch: usize,
    pub seq: usize,
    pub n: usize,
    pub d: usize,
    /// This rank's shard of the routed experts (none: all of them).
    pub experts: Option<ExpertShard>,
}

pub(crate) fn norm_params(b: &mut Builder, s: &Spec, name: &str, d: usize) -> NormW {
    match s.norm {
        Norm::Rmsnorm { eps } => {
            NormW::Rms { w: b.param(format!("{name}.weight"), &[d], Init::Ones, ParamGroup::NoDecay), eps: eps as f32 }
        }
        Norm::Dyt { alpha_init } => NormW::Dyt {
            w: b.param(format!("{name}.weight"), &[d], Init::Ones, ParamGroup::NoDecay),
            b: b.param(format!("{name}.bias"), &[d], Init::Zeros, ParamGroup::NoDecay),
            alpha: b.param(format!("{name}.alpha"), &[1], Init::Const(alpha_init as f32), ParamGroup::NoDecay),
        },
    }
}

fn matrix(b: &mut Builder, s: &Spec, name: &str, n_out: usize, n_in: usize) -> W {
    let p =
        b.param(format!("{name}.weight"), &[n_out, n_in], Init::Normal { std: s.init_std as f32 }, ParamGroup::Decay);
    W::whole(p, n_out, n_in)
}

/// A SwiGLU MLP `down(silu(gate(x)) ⊙ up(x))` with parameters under `name` (`….mlp` or
/// `….mlp.shared_experts`), written into `into` when given.
fn swiglu_mlp(b: &mut Builder, s: &Spec, name: &str, x: Tid, n: usize, inter: usize, into: Option<Tid>) -> Tid {
    let d = s.d_model as usize;
    let short = name.rsplit_once(".mlp").map_or(name.to_string(), |(_, rest)| format!("mlp{rest}"));
    let gate = matrix(b, s, &format!("{name}.gate_proj"), inter, d);
    let up = matrix(b, s, &format!("{name}.up_proj"), inter, d);
    let down = matrix(b, s, &format!("{name}.down_proj"), d, inter);
    let g = b.linear(x, n, gate, &format!("{short}.gate_proj"));
    let u = b.linear(x, n, up, &format!("{short}.up_proj"));
    let a = b.recomputed(|b| b.swiglu(g, u, &format!("{short}.act")));
    match into {
        Some(out) => {
            b.linear_into(a, n, down, out, false, &format!("{short}.down_proj"));
            out
        }
        None => b.linear(a, n, down, &format!("{short}.down_proj")),
    }
}

/// Rope frequencies of the spec, with YaRN's cos/sin attention factor.
pub fn rope_freqs(s: &Spec) -> RopeFreqs {
    let m = &s.attention.mla;
    RopeFreqs {
        theta: m.rope_theta,
        yarn: m.yarn.as_ref().map(|y| (y.factor, y.original_max_position_embeddings, y.beta_fast, y.beta_slow)),
        attention_factor: m.yarn.as_ref().map_or(1.0, |y| {
            (dsv3c_spec::types::yarn_get_mscale(y.factor, y.mscale)
                / dsv3c_spec::types::yarn_get_mscale(y.factor, y.mscale_all_dim)) as f32
        }),
    }
}

/// One decoder layer on the residual stream `h`.
/// Returns the new stream and, for MoE layers, what the router left and the bias parameter.
pub(crate) fn decoder_layer(
    b: &mut Builder,
    c: &Ctx,
    layer: usize,
    prefix: &str,
    h: Tid,
    kind: LayerAttention,
    moe: bool,
) -> (Tid, Option<(MoeOut, usize)>) {
    let s = c.s;
    let m = &s.attention.mla;
    let (n, d) = (c.n, c.d);
    let (heads, dn, dr, dv) =
        (m.n_heads as usize, m.qk_nope_head_dim as usize, m.qk_rope_head_dim as usize, m.v_head_dim as usize);
    let (qr, kvr) = (m.q_lora_rank as usize, m.kv_lora_rank as usize);
    let dqk = dn + dr;

    // The layer's norms, MLA up-projections and SwiGLU products are `recomputed` regions: with
    // selective recomputation the backward makes them again instead of keeping them.
    b.layer_begin();
    let freqs = rope_freqs(s);
    let rope = |b: &mut Builder, x: Tid, heads: usize, row_stride: usize, head_stride: usize, offset: usize| match &c
        .attend
    {
        Attend::Train => b.rope(
            x,
            Op::Rope { tokens: n, seq: c.seq, heads, row_stride, head_stride, offset, dim: dr, freqs, inverse: false },
        ),
        Attend::Decode { positions, per_seq, .. } => {
            let op =
                Op::RopeAt { tokens: n, per_seq: *per_seq, heads, row_stride, head_stride, offset, dim: dr, freqs };
            b.launch(op, vec![Arg::T(*positions), Arg::T(x)], "rope");
        }
    };

    // Attention.
    let in_norm = norm_params(b, s, &format!("{prefix}.input_layernorm"), d);
    let x = b.recomputed(|b| b.norm(h, n, d, d, in_norm, "input_layernorm"));
    let q = if qr > 0 {
        let qa = matrix(b, s, &format!("{prefix}.self_attn.q_a_proj"), qr, d);
        let qa_norm = norm_params(b, s, &format!("{prefix}.self_attn.q_a_layernorm"), qr);
        let qb = matrix(b, s, &format!("{prefix}.self_attn.q_b_proj"), heads * dqk, qr);
        let ca = b.linear(x, n, qa, "q_a_proj");
        let cn = b.recomputed(|b| b.norm(ca, n, qr, qr, qa_norm, "q_a_layernorm"));
        b.recomputed(|b| {
            let q = b.linear(cn, n, qb, "q_b_proj");
            rope(b, q, heads, heads * dqk, dqk, dn);
            q
        })
    } else {
        let qp = matrix(b, s, &format!("{prefix}.self_attn.q_proj"), heads * dqk, d);
        let q = b.linear(x, n, qp, "q_proj");
        rope(b, q, heads, heads * dqk, dqk, dn);
        q
    };
    let kva_w = matrix(b, s, &format!("{prefix}.self_attn.kv_a_proj_with_mqa"), kvr + dr, d);
    let kv_norm = norm_params(b, s, &format!("{prefix}.self_attn.kv_a_layernorm"), kvr);
    let kvb_w = matrix(b, s, &format!("{prefix}.self_attn.kv_b_proj"), heads * (dn + dv), kvr);
    let o_w = matrix(b, s, &format!("{prefix}.self_attn.o_proj"), d, heads * dv);
    let window = match (kind, &s.attention.swa) {
        (LayerAttention::Swa, Some(w)) => Some((w.window as usize, w.sink_tokens as usize)),
        _ => None,
    };
    let kva = b.linear(x, n, kva_w, "kv_a_proj_with_mqa");
    // The norm reads the latent columns; the rope then turns the key columns in place.
    let ckv = b.recomputed(|b| b.norm(kva, n, kvr, kvr + dr, kv_norm, "kv_a_layernorm"));
    rope(b, kva, 1, kvr + dr, 0, kvr);
    let scale = m.softmax_scale() as f32;
    let attn = Attn {
        batch: c.batch,
        seq: c.seq,
        heads,
        nope: dn,
        rope: dr,
        v: dv,
        kpe_stride: kvr + dr,
        kpe_offset: kvr,
        scale,
        window,
    };
    let o = match &c.attend {
        Attend::Train => {
            let kvb = b.recomputed(|b| b.linear(ckv, n, kvb_w, "kv_b_proj"));
            b.attention(attn, q, kvb, kva)
        }
        Attend::Decode { positions, per_seq, cache, caches, absorbed } => {
            let lc = caches[layer];
            let mut args = vec![Arg::T(*positions), Arg::T(ckv), Arg::T(kva)];
            args.extend(lc.args());
            b.launch(Op::CacheWrite { cache: *cache, per_seq: *per_seq, kva_stride: kvr + dr }, args, "cache write");
            if *absorbed {
                let hd = Heads { tokens: n, heads, nope: dn, rope: dr, v: dv, kvr };
                let q_lat = b.tensor("attn.q_lat", n * heads * kvr);
                let kv_b = b.p(kvb_w.param);
                b.launch(Op::AbsorbQuery(hd), vec![Arg::T(q), kv_b, Arg::T(q_lat)], "absorb W_UK into the query");
                let o_lat = b.tensor("attn.o_lat", n * heads * kvr);
                let la = LatentAttn { cache: *cache, per_seq: *per_seq, heads, nope: dn, scale, window };
                let mut args = vec![Arg::T(*positions), Arg::T(q_lat), Arg::T(q)];
                args.extend(lc.args());
                args.push(Arg::T(o_lat));
                b.launch(Op::LatentAttention(la), args, "latent attention");
                let o = b.tensor("attn.o", n * heads * dv);
                b.launch(Op::AbsorbOutput(hd), vec![Arg::T(o_lat), kv_b, Arg::T(o)], "W_UV on the attention's latent");
                o
            } else {
                let kvb = b.linear(ckv, n, kvb_w, "kv_b_proj");
                b.attention(attn, q, kvb, kva)
            }
        }
    };
    let ao = b.linear(o, n, o_w, "o_proj");
    let h = b.add(h, ao, "residual.attn");

    // FFN.
    let post_norm = norm_params(b, s, &format!("{prefix}.post_attention_layernorm"), d);
    let x = b.recomputed(|b| b.norm(h, n, d, d, post_norm, "post_attention_layernorm"));
    let mut chosen = None;
    let f = match (&s.moe, moe) {
        (Some(e), true) => {
            let (ne, k, im) = (e.n_routed_experts as usize, e.top_k as usize, e.moe_intermediate_size as usize);
            let gate = b.param(
                format!("{prefix}.mlp.gate.weight"),
                &[ne, d],
                Init::Normal { std: s.init_std as f32 },
                ParamGroup::Decay,
            );
            let bias =
                b.param(format!("{prefix}.mlp.gate.e_score_correction_bias"), &[ne], Init::Zeros, ParamGroup::Frozen);
            // This rank's routed experts (all of them on one device), with their global indices.
            let held = match c.experts {
                Some(x) => x.rank * ne / x.ranks..(x.rank + 1) * ne / x.ranks,
                None => 0..ne,
            };
            let mut first = [0usize; 3];
            for (j, (proj, shape)) in
                [("gate_proj", [im, d]), ("up_proj", [im, d]), ("down_proj", [d, im])].into_iter().enumerate()
            {
                for ex in held.clone() {
                    let p = b.param(
                        format!("{prefix}.mlp.experts.{ex}.{proj}.weight"),
                        &shape,
                        Init::Normal { std: s.init_std as f32 },
                        ParamGroup::Decay,
                    );
                    b.routed_experts.insert(p);
                    if ex == held.start {
                        first[j] = p;
                    }
                }
            }
            let score = match e.score_func {
                ScoreFunc::Sigmoid => Score::Sigmoid,
                ScoreFunc::Softmax => Score::Softmax,
            };
            let out = b.tensor("moe.out", n * d);
            let si = (e.n_shared_experts * e.moe_intermediate_size) as usize;
            if si > 0 {
                swiglu_mlp(b, s, &format!("{prefix}.mlp.shared_experts"), x, n, si, Some(out));
            } else {
                b.launch(Op::Zero { n: n * d }, vec![Arg::T(out)], "moe output");
            }
            let route = Route {
                tokens: n,
                experts: ne,
                groups: e.n_group as usize,
                top_groups: e.top_groups as usize,
                top_k: k,
                score,
                normalize: e.norm_topk_prob,
                scale: e.route_scale as f32,
            };
            let balance = c.loss.filter(|_| e.seq_aux_alpha > 0.0).map(|loss| {
                (
                    Balance { batch: c.batch, seq: c.seq, experts: ne, top_k: k, alpha: e.seq_aux_alpha as f32, score },
                    loss,
                )
            });
            let shard = c.experts.map(|x| dsv3c_runtime::op::Exchange {
                experts: ne,
                ranks: x.ranks,
                rows: n * k,
                capacity: x.capacity(n, k, ne),
            });
            chosen = Some((b.moe(x, route, d, im, gate, bias, first, out, balance, shard), bias));
            out
        }
        _ => {
            let i = s.dense.as_ref().map_or(0, |x| x.intermediate_size as usize);
            swiglu_mlp(b, s, &format!("{prefix}.mlp"), x, n, i, None)
        }
    };
    let out = b.add(h, f, "residual.ffn");
    b.layer_end();
    (out, chosen)
}

/// The LM head: the embedding matrix when tied, else `lm_head.weight`.
pub(crate) fn lm_head(b: &mut Builder, s: &Spec, embed: usize) -> W {
    let (v, d) = (s.vocab_size as usize, s.d_model as usize);
    let w = if s.tie_embeddings {
        embed
    } else {
        b.param("lm_head.weight", &[v, d], Init::Normal { std: s.init_std as f32 }, ParamGroup::Embedding)
    };
    W::whole(w, v, d).kind(WeightKind::Head)
}

/// An MTP module's input over `n` rows: `eh_proj([enorm(emb(next)) ; hnorm(prev)])`, where `next`
/// holds each position's next token and `prev` the hidden state the module continues from.
pub(crate) fn mtp_input(b: &mut Builder, s: &Spec, prefix: &str, embed: usize, next: Tid, prev: Tid, n: usize) -> Tid {
    let (v, d) = (s.vocab_size as usize, s.d_model as usize);
    let e = b.embedding(next, embed, n, v, d);
    let enorm = norm_params(b, s, &format!("{prefix}.enorm"), d);
    let hnorm = norm_params(b, s, &format!("{prefix}.hnorm"), d);
    let eh = b.param(
        format!("{prefix}.eh_proj.weight"),
        &[d, 2 * d],
        Init::Normal { std: s.init_std as f32 },
        ParamGroup::Decay,
    );
    let en = b.norm(e, n, d, d, enorm, "enorm");
    let hp = b.norm(prev, n, d, d, hnorm, "hnorm");
    let x = b.tensor("eh_proj", n * d);
    let half = |col| W { param: eh, n_out: d, n_in: d, ld: 2 * d, col, kind: WeightKind::Head };
    b.linear_into(en, n, half(0), x, false, "eh_proj (embedding half)");
    b.linear_into(hp, n, half(d), x, true, "eh_proj (hidden half)");
    x
}

/// Builds the forward graph of `stage` for `batch` sequences of `seq` tokens; returns the run's
/// tensors. A stage after the first receives its input hidden state from the stage before, one
/// before the last sends its output to the stage after (and in the backward, the gradients the
/// other way).
pub fn build(b: &mut Builder, s: &Spec, batch: usize, seq: usize, stage: &Stage) -> Outputs {
    let (v, d) = (s.vocab_size as usize, s.d_model as usize);
    let n = batch * seq;
    b.precision = PrecisionPolicy::of(s);
    let tokens = b.tensor("tokens", n);
    let loss = b.tensor("loss", 1);
    let c = Ctx { s, attend: Attend::Train, loss: Some(loss), batch, seq, n, d, experts: stage.experts };
    let main_loss = b.tensor("loss.main", 1);
    b.launch(Op::Zero { n: 1 }, vec![Arg::T(loss)], "total loss");

    // The token embedding: the first stage's input, and the MTP modules' (and a tied head's)
    // on the last.
    let needs_embedding = stage.first || (stage.last && (s.mtp.is_some() || s.tie_embeddings));
    let embed = needs_embedding.then(|| {
        b.param("model.embed_tokens.weight", &[v, d], Init::Normal { std: s.init_std as f32 }, ParamGroup::Embedding)
    });
    let mut moe_outs: Vec<(MoeOut, usize)> = Vec::new();
    let mut moe_layers = Vec::new();
    let mut h = match embed.filter(|_| stage.first) {
        Some(embed) => b.embedding(tokens, embed, n, v, d),
        None => {
            b.context = "pipeline".into();
            let h = b.tensor("input", n * d);
            b.launch(Op::Recv { n: n * d, peer: Peer::Prev }, vec![Arg::T(h)], "hidden state from the stage before");
            b.on_backward(move |b| {
                let g = b.grad(h);
                b.launch(Op::Send { n: n * d, peer: Peer::Prev }, vec![Arg::T(g)], "its gradient to the stage before");
            });
            h
        }
    };
    for l in stage.layers.clone() {
        b.context = format!("layer {l}");
        let moe = l >= s.n_dense_layers();
        let (next, idx) = decoder_layer(b, &c, l as usize, &format!("model.layers.{l}"), h, s.layer_attention(l), moe);
        h = next;
        if idx.is_some() {
            moe_layers.push((l - s.n_dense_layers()) as usize);
        }
        moe_outs.extend(idx);
    }
    let mut mtp_losses = Vec::new();
    if !stage.last {
        b.context = "pipeline".into();
        b.launch(Op::Zero { n: 1 }, vec![Arg::T(main_loss)], "no loss before the last stage");
        b.launch(Op::Send { n: n * d, peer: Peer::Next }, vec![Arg::T(h)], "hidden state to the stage after");
        b.on_backward(move |b| {
            let g = b.grad(h);
            b.launch(Op::Recv { n: n * d, peer: Peer::Next }, vec![Arg::T(g)], "its gradient from the stage after");
        });
    } else {
        let embed = embed.unwrap_or_default();
        b.context = "head".into();
        let final_norm = norm_params(b, s, "model.norm", d);
        let hn = b.norm(h, n, d, d, final_norm, "norm");
        let head = lm_head(b, s, embed);
        let logits = b.linear(hn, n, head, "lm_head");
        b.cross_entropy(logits, tokens, main_loss, batch, seq, v, 1, 1.0);
        b.launch(Op::AddScaled { n: 1, alpha: 1.0 }, vec![Arg::T(main_loss), Arg::T(loss)], "total loss");

        let mut prev = hn;
        if let Some(mtp) = &s.mtp {
            let weight = (mtp.loss_weight / mtp.depth as f64) as f32;
            for k in 1..=mtp.depth as usize {
                let l = s.n_layers as usize + k - 1;
                let prefix = format!("model.layers.{l}");
                b.context = format!("mtp {k}");
                let shifted = b.tensor("tokens", n);
                b.launch(
                    Op::ShiftTokens { batch, seq, shift: k },
                    vec![Arg::T(tokens), Arg::T(shifted)],
                    "shift tokens",
                );
                let x = mtp_input(b, s, &prefix, embed, shifted, prev, n);
                let (hk, idx) = decoder_layer(b, &c, l, &prefix, x, LayerAttention::Mla, s.moe.is_some());
                if idx.is_some() {
                    moe_layers.push(s.n_moe_layers() as usize + k - 1);
                }
                moe_outs.extend(idx);
                let sh = norm_params(b, s, &format!("{prefix}.shared_head.norm"), d);
                let hs = b.norm(hk, n, d, d, sh, "shared_head.norm");
                let logits = b.linear(hs, n, head, "shared_head.head");
                let lk = b.tensor("loss", 1);
                b.cross_entropy(logits, tokens, lk, batch, seq, v, k + 1, weight);
                b.launch(Op::AddScaled { n: 1, alpha: weight }, vec![Arg::T(lk), Arg::T(loss)], "total loss");
                mtp_losses.push(lk);
                prev = hk;
            }
        }
    }
    b.context.clear();
    Outputs {
        tokens,
        reads_tokens: stage.first || stage.last,
        loss,
        main_loss,
        mtp_losses,
        expert_choices: moe_outs.iter().map(|m| m.0.idx).collect(),
        expert_scores: moe_outs.iter().map(|m| m.0.scores).collect(),
        expert_stats: moe_outs.iter().map(|m| (m.0.stats, m.1)).collect(),
        expert_dropped: moe_outs.iter().filter_map(|m| m.0.dropped).collect(),
        moe_layers,
        embedding: embed,
        ends_share_embedding: stage.first != stage.last && (s.mtp.is_some() || s.tie_embeddings),
    }
}
