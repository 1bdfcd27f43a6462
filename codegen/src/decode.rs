//! Decode programs: the model's forward over `per_seq` new tokens of each of `batch` sequences,
//! each at its own position, over a latent KV cache of `cache_len` rows per sequence — a prefill
//! of the prompts, a one-token decode step, or the two-token verify step of MTP speculation.
//!
//! Each layer appends its new tokens' normalized latent and roped key to its cache
//! (`Op::CacheWrite`), then attends in MLA's absorbed form (`Op::AbsorbQuery`,
//! `Op::LatentAttention`, `Op::AbsorbOutput`), or — a prefill from position 0 — in the training
//! form within the new tokens. The final norm and the LM head leave logits for every new token;
//! sampling is the host's. With a draft, a second list runs the first MTP module over the same
//! positions (its input: the main model's final hidden state and the embedding of each position's
//! next token, which the host writes after sampling) into the draft's logits and the module's own
//! cache. Parameters carry their Hugging Face names, as in training, and load by name; the MTP
//! module's only when the draft is compiled.

use dsv3c_runtime::op::{Cache, Op};
use dsv3c_runtime::program::{Decode, Init, LayerCache, ParamGroup, Program};
use dsv3c_runtime::DType;
use dsv3c_spec::types::{KvCacheDtype, LayerAttention, Spec};

use crate::builder::{Arg, Builder, Phase, PrecisionPolicy, Tid};
use crate::model::{decoder_layer, lm_head, mtp_input, norm_params, Attend, Ctx, LayerCacheT};
use crate::plan::lay_out;
use crate::CompileError;

/// The FP8 cache's tile (FlashMLA: one scale per 128 latent values).
pub const FP8_CACHE_TILE: usize = 128;

/// What a decode program is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeShape {
    pub batch: usize,
    /// New tokens per sequence per step.
    pub per_seq: usize,
    /// Cache rows per sequence: the longest prompt plus new tokens it serves.
    pub cache_len: usize,
    pub cache: KvCacheDtype,
    /// Absorbed attention over the cache (decode); else the training form within the new
    /// tokens (a prefill from position 0).
    pub absorbed: bool,
    /// Compile the first MTP module's draft list (the spec must have MTP).
    pub draft: bool,
    /// Logits for one token per sequence only, the one at `logit_rows[b]` (a prefill: each prompt's
    /// last), rather than for every new token: the LM head and the logits read shrink by `per_seq`.
    pub last_only: bool,
}

/// Why a decode program could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("batch, tokens per step and cache length must be at least 1 (got {batch}, {per_seq}, {cache_len})")]
    Shape { batch: usize, per_seq: usize, cache_len: usize },
    #[error("a cache of {cache_len} positions exceeds the spec's max_seq_len {max}")]
    CacheTooLong { cache_len: usize, max: u64 },
    #[error("{per_seq} new tokens per step exceed the cache's {cache_len} positions")]
    StepTooLong { per_seq: usize, cache_len: usize },
    #[error("an MTP draft needs a spec with an MTP module")]
    NoMtp,
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// The cache format of a decode program.
pub fn cache_format(spec: &Spec, shape: &DecodeShape) -> Cache {
    let m = &spec.attention.mla;
    Cache {
        batch: shape.batch,
        len: shape.cache_len,
        kvr: m.kv_lora_rank as usize,
        rope: m.qk_rope_head_dim as usize,
        fp8_tile: (shape.cache == KvCacheDtype::Fp8).then_some(FP8_CACHE_TILE),
    }
}

/// Compiles `spec` into a decode Program of `shape`.
pub fn compile_decode(spec: &Spec, shape: DecodeShape) -> Result<Program, DecodeError> {
    let DecodeShape { batch, per_seq, cache_len, .. } = shape;
    if batch == 0 || per_seq == 0 || cache_len == 0 {
        return Err(DecodeError::Shape { batch, per_seq, cache_len });
    }
    if cache_len as u64 > spec.max_seq_len {
        return Err(DecodeError::CacheTooLong { cache_len, max: spec.max_seq_len });
    }
    if per_seq > cache_len {
        return Err(DecodeError::StepTooLong { per_seq, cache_len });
    }
    let draft = match (&spec.mtp, shape.draft) {
        (_, false) => false,
        (Some(_), true) => true,
        (None, true) => return Err(DecodeError::NoMtp),
    };
    let n = batch * per_seq;
    let top_k = spec.moe.as_ref().map_or(1, |m| m.top_k as usize);
    if n * top_k >= 1 << 24 || batch * cache_len >= 1 << 24 {
        return Err(CompileError::TooManyTokens(n.max(batch * cache_len)).into());
    }
    let (v, d) = (spec.vocab_size as usize, spec.d_model as usize);
    let mut b = Builder::default();
    b.precision = PrecisionPolicy::of(spec);
    let cache = cache_format(spec, &shape);
    let layers = spec.n_layers as usize + usize::from(draft);
    let rows = batch * cache_len;
    let real = if shape.cache == KvCacheDtype::F32 { DType::F32 } else { DType::Bf16 };
    let caches: Vec<LayerCacheT> = (0..layers)
        .map(|l| LayerCacheT {
            latent: b.pinned_tensor(
                format!("cache.{l}.latent"),
                rows * cache.kvr,
                if cache.fp8_tile.is_some() { DType::E4m3 } else { real },
            ),
            scales: cache
                .fp8_tile
                .map(|_| b.pinned_tensor(format!("cache.{l}.scales"), rows * cache.scales_per_row(), DType::F32)),
            rope: b.pinned_tensor(format!("cache.{l}.rope"), rows * cache.rope, real),
        })
        .collect();
    let tokens = b.tensor("tokens", n);
    let positions = b.tensor("positions", batch);
    let attend = Attend::Decode { positions, per_seq, cache, caches: caches.clone(), absorbed: shape.absorbed };
    let c = Ctx { s: spec, attend, loss: None, batch, seq: per_seq, n, d, experts: None };

    let embed = b.param(
        "model.embed_tokens.weight",
        &[v, d],
        Init::Normal { std: spec.init_std as f32 },
        ParamGroup::Embedding,
    );
    let mut h = b.embedding(tokens, embed, n, v, d);
    for l in 0..spec.n_layers {
        b.context = format!("layer {l}");
        let moe = l >= spec.n_dense_layers();
        let (next, _) =
            decoder_layer(&mut b, &c, l as usize, &format!("model.layers.{l}"), h, spec.layer_attention(l), moe);
        h = next;
    }
    b.context = "head".into();
    let final_norm = norm_params(&mut b, spec, "model.norm", d);
    let hn = b.norm(h, n, d, d, final_norm, "norm");
    let head = lm_head(&mut b, spec, embed);
    // The rows the LM head reads: every new token's, or the one per sequence that `logit_rows` names.
    let logit_rows = shape.last_only.then(|| b.tensor("logit_rows", batch));
    let gather = |b: &mut Builder, x: Tid, what: &str| -> (Tid, usize) {
        match logit_rows {
            Some(rows) => {
                let g = b.tensor(format!("{what}.rows"), batch * d);
                let op = Op::Embedding { n: batch, vocab: n, d };
                b.launch(op, vec![Arg::T(rows), Arg::T(x), Arg::T(g)], "the rows the LM head reads");
                (g, batch)
            }
            None => (x, n),
        }
    };
    let (hl, rows) = gather(&mut b, hn, "norm");
    let logits = b.linear(hl, rows, head, "lm_head");

    let mut next_tokens = None;
    let mut draft_logits = None;
    if draft {
        // The first MTP module drafts the token after next.
        let l = spec.n_layers as usize;
        let prefix = format!("model.layers.{l}");
        b.context = "mtp 1".into();
        b.phase = Phase::Draft;
        let next = b.tensor("next_tokens", n);
        let x = mtp_input(&mut b, spec, &prefix, embed, next, hn, n);
        let (hk, _) = decoder_layer(&mut b, &c, l, &prefix, x, LayerAttention::Mla, spec.moe.is_some());
        let sh = norm_params(&mut b, spec, &format!("{prefix}.shared_head.norm"), d);
        let hs = b.norm(hk, n, d, d, sh, "shared_head.norm");
        let (hl, rows) = gather(&mut b, hs, "shared_head.norm");
        draft_logits = Some(b.linear(hl, rows, head, "shared_head.head"));
        next_tokens = Some(next);
        b.phase = Phase::Forward;
    }
    b.context.clear();
    let weight_bytes = crate::step::build_inference(&mut b);

    let io: Vec<Tid> =
        [tokens, positions, logits].into_iter().chain(next_tokens).chain(draft_logits).chain(logit_rows).collect();
    let pinned: Vec<Tid> = caches.iter().flat_map(|c| [Some(c.latent), c.scales, Some(c.rope)]).flatten().collect();
    let laid = lay_out(&b, &[&b.start, &b.forward, &b.draft], &io, &pinned, false);
    let t = |x: Tid| laid.slices[x];
    let mut lists = laid.lists.into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let (start, forward, draft_list) = (next(), next(), next());
    let none = dsv3c_runtime::program::Slice::act(0, 0, DType::F32);
    let program = Program {
        name: spec.name.clone(),
        batch,
        seq: per_seq,
        param_len: laid.param_len,
        act_bytes: laid.act_bytes,
        optim_len: 0,
        weight_bytes,
        start,
        forward,
        backward: Vec::new(),
        update: Vec::new(),
        io: dsv3c_runtime::program::Io {
            tokens: t(tokens),
            loss: none,
            main_loss: none,
            mtp_losses: Vec::new(),
            expert_choices: Vec::new(),
            expert_scores: Vec::new(),
            scalars: none,
            grad_norm: none,
            expert_stats: Vec::new(),
        },
        decode: Some(Decode {
            per_seq,
            cache_len,
            absorbed: shape.absorbed,
            positions: t(positions),
            logits: t(logits),
            logit_rows: logit_rows.map(t),
            caches: caches
                .iter()
                .map(|c| LayerCache { latent: t(c.latent), scales: c.scales.map(t), rope: t(c.rope) })
                .collect(),
            draft: draft_list,
            next_tokens: next_tokens.map(t),
            draft_logits: draft_logits.map(t),
        }),
        rank: None,
        params: laid.params,
        buffers: laid.buffers,
        kernels: laid.kernels,
    };
    program.check().map_err(CompileError::Plan)?;
    let mut program = program;
    // The device payload, as for training programs.
    for k in &mut program.kernels {
        k.device = crate::cuda::device_code(k);
    }
    Ok(program)
}
