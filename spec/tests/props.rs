//! Property tests of the spec language: random valid specs (dtypes, FP8 recipes and FP8 KV caches
//! included) round-trip through YAML and through Hugging Face config.json; random edits of valid YAML never panic and are always located.

use dsv3c_spec::types::*;
use dsv3c_spec::{hf, SpecError};
use proptest::prelude::*;

fn real() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), Just(0.5), 1e-3f64..100.0]
}

fn mla(max_seq_len: u64) -> impl Strategy<Value = Mla> {
    let yarn = prop_oneof![
        Just(None),
        (1.0f64..64.0, 1..=max_seq_len, 2.0f64..64.0, 0.1f64..2.0, real(), real()).prop_map(
            |(factor, orig, bf, bs, m, ma)| {
                Some(Yarn {
                    factor,
                    original_max_position_embeddings: orig,
                    beta_fast: bf,
                    beta_slow: bs.min(bf / 2.0),
                    mscale: m,
                    mscale_all_dim: ma,
                })
            }
        ),
    ];
    (1u64..=16, prop_oneof![Just(0u64), 1u64..=96], 1u64..=96, 1u64..=64, 1u64..=32, 1u64..=64, 10.0f64..1e6, yarn)
        .prop_map(|(n_heads, q_lora_rank, kv_lora_rank, nope, half_rope, v, rope_theta, yarn)| Mla {
            n_heads,
            q_lora_rank,
            kv_lora_rank,
            qk_nope_head_dim: nope,
            qk_rope_head_dim: 2 * half_rope,
            v_head_dim: v,
            rope_theta,
            yarn,
        })
}

fn moe() -> impl Strategy<Value = Moe> {
    (1u64..=4, 2u64..=8, 1u64..=64, any::<bool>(), real(), any::<bool>(), 0.0f64..0.01, 0.0f64..0.01, 0u64..=2)
        .prop_flat_map(|(groups, per_group, inter, sigmoid, scale, norm, gamma, alpha, shared)| {
            (1..=groups, Just((groups, per_group, inter, sigmoid, scale, norm, gamma, alpha, shared)))
        })
        .prop_flat_map(|(top_groups, rest)| {
            let (groups, per_group, ..) = rest;
            let e = groups * per_group;
            (1..=(top_groups * per_group).min(e), Just(top_groups), Just(rest))
        })
        .prop_map(|(top_k, top_groups, (groups, per_group, inter, sigmoid, scale, norm, gamma, alpha, shared))| Moe {
            n_routed_experts: groups * per_group,
            n_shared_experts: shared,
            top_k,
            moe_intermediate_size: inter,
            score_func: if sigmoid { ScoreFunc::Sigmoid } else { ScoreFunc::Softmax },
            n_group: groups,
            top_groups,
            route_scale: scale,
            norm_topk_prob: norm,
            bias_update_speed: gamma,
            seq_aux_alpha: alpha,
        })
}

/// Random precision settings: dtypes (the master copy never narrower than the weights), an FP8
/// recipe (tile 16–128) and an FP8 KV cache.
fn precision() -> impl Strategy<Value = Precision> {
    let dtype = || prop_oneof![Just(Dtype::F32), Just(Dtype::Bf16)];
    (dtype(), dtype(), dtype(), proptest::option::of(prop::sample::select(vec![16u64, 32, 64, 128])), any::<bool>())
        .prop_map(|(master, param, compute, tile, fp8_cache)| Precision {
            master: if master.bytes() < param.bytes() { param } else { master },
            param,
            compute,
            fp8: tile.map(|t| Fp8 { format: Fp8Format::E4m3, activation_tile: t, weight_block: t }),
            kv_cache: if fp8_cache { KvCacheDtype::Fp8 } else { KvCacheDtype::Bf16 },
        })
}

/// `s` with `p`, its dims rounded up where the precision needs it: every FP8 GEMM's K a multiple
/// of the tile, and the latent a multiple of 128 for an FP8 KV cache.
fn with_precision(mut s: Spec, p: Precision) -> Spec {
    let up = |x: &mut u64, m: u64| *x = x.div_ceil(m) * m;
    if let Some(f) = &p.fp8 {
        let t = f.activation_tile;
        up(&mut s.d_model, t);
        up(&mut s.attention.mla.kv_lora_rank, t);
        up(&mut s.attention.mla.q_lora_rank, t); // 0 (no q-LoRA) stays 0
        up(&mut s.attention.mla.v_head_dim, t);
        if let Some(d) = s.dense.as_mut() {
            up(&mut d.intermediate_size, t);
        }
        if let Some(m) = s.moe.as_mut() {
            up(&mut m.moe_intermediate_size, t);
        }
    }
    if p.kv_cache == KvCacheDtype::Fp8 {
        up(&mut s.attention.mla.kv_lora_rank, 128);
    }
    s.precision = p;
    s
}

/// Random valid specs; `hf_only` keeps to what Hugging Face's DeepseekV3 can express.
fn spec(hf_only: bool) -> impl Strategy<Value = Spec> {
    (spec_f32(hf_only), precision()).prop_map(|(s, p)| with_precision(s, p))
}

/// Random valid specs in f32 throughout.
fn spec_f32(hf_only: bool) -> impl Strategy<Value = Spec> {
    let head = (2u64..=4096, 1u64..=512, 1u64..=8, 64u64..=8192, any::<bool>(), real());
    (
        head,
        proptest::option::of(moe()),
        1u64..=256,
        proptest::option::of((1u64..=3, real())),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(move |((vocab, d_model, n_layers, max_seq_len, tie, init_std), moe, dense_i, mtp, dyt, swa)| {
            let dense_layers = if moe.is_some() { 0..n_layers } else { n_layers..n_layers + 1 };
            (
                Just((vocab, d_model, n_layers, max_seq_len, tie, init_std, moe, dense_i, mtp)),
                dense_layers,
                mla(max_seq_len),
                Just(dyt && !hf_only),
                Just(swa && !hf_only && n_layers >= 2),
                1u64..max_seq_len,
            )
        })
        .prop_map(
            |((vocab, d_model, n_layers, max_seq_len, tie, init_std, moe, dense_i, mtp), nd, mla, dyt, swa, window)| {
                let has_moe = moe.is_some();
                Spec {
                    name: format!("p{d_model}-{n_layers}"),
                    vocab_size: vocab,
                    d_model,
                    n_layers,
                    max_seq_len,
                    tie_embeddings: tie,
                    init_std,
                    norm: if dyt { Norm::Dyt { alpha_init: 0.5 } } else { Norm::Rmsnorm { eps: 1e-5 } },
                    dense: (!has_moe || nd > 0).then_some(Dense { n_layers: nd, intermediate_size: dense_i }),
                    attention: Attention {
                        mla,
                        swa: swa.then_some(Swa { window, sink_tokens: window / 2 }),
                        pattern: if swa {
                            vec![LayerAttention::Swa, LayerAttention::Mla]
                        } else {
                            vec![LayerAttention::Mla]
                        },
                    },
                    moe,
                    mtp: mtp.map(|(depth, loss_weight)| Mtp { depth, loss_weight }),
                    precision: Precision::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_specs_round_trip_through_yaml(s in spec(false)) {
        let v = dsv3c_spec::validate::validate(&s);
        prop_assert!(v.is_empty(), "generated spec is invalid: {v:#?}");
        let yaml = s.to_yaml();
        let back = dsv3c_spec::parse("rt.yaml", &yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(back.to_yaml(), yaml);
        prop_assert_eq!(back, s);
    }

    #[test]
    fn random_valid_specs_round_trip_through_hf_config(s in spec(true)) {
        let config = hf::export_text(&s).unwrap();
        let back = hf::import(&config, &s.name).map_err(|e| TestCaseError::fail(format!("{e}\n{config}")))?;
        prop_assert_eq!(back, s);
    }

    #[test]
    fn edits_of_valid_yaml_never_panic_and_are_located(
        base in prop::sample::select(dsv3c_spec::canonical::CANONICAL.to_vec()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..12, "[ -~\n\t]{0,6}"), 1..4),
    ) {
        let mut src = base.1.to_string();
        for (at, del, ins) in edits {
            let mut i = at.index(src.len() + 1);
            while !src.is_char_boundary(i) { i -= 1; }
            let mut j = (i + del).min(src.len());
            while !src.is_char_boundary(j) { j += 1; }
            src.replace_range(i..j, &ins);
        }
        let lines = src.lines().count().max(1);
        match dsv3c_spec::parse("m.yaml", &src) {
            Ok(_) => {}
            Err(SpecError::Problems(set)) => {
                prop_assert!(!set.problems.is_empty());
                for p in &set.problems {
                    prop_assert!(p.pos.line >= 1 && p.pos.line <= lines + 1, "{:?} outside {} lines", p.pos, lines);
                    prop_assert!(p.pos.column >= 1);
                    prop_assert!(!p.message.is_empty());
                    // Rendering must not panic either.
                    let _ = format!("{:?}", miette::Report::new(SpecError::Problems(Box::new(dsv3c_spec::error::ProblemSet::new("m.yaml", &src, vec![p.clone()])))));
                }
                let shown = SpecError::Problems(set).to_string();
                prop_assert!(shown.contains("m.yaml:"), "{}", shown);
            }
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }
}
