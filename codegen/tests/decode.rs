//! Decode programs on the CPU reference: the absorbed attention over the latent cache agrees with
//! MLA's training form; greedy decoding is the argmax of a full forward at every position (teacher
//! forcing); MTP speculative decoding at temperature 0 gives plain greedy's tokens; the cache holds
//! exactly `inspect`'s bytes; an FP8 cache stays close to a bf16 one; bad requests are refused.

use dsv3c_codegen::{compile_decode, DecodeShape};
use dsv3c_runtime::cpu::Cpu;
use dsv3c_runtime::generate::sampler::{argmax, Sampling};
use dsv3c_runtime::generate::{generate, GenerateError, Generated, Programs};
use dsv3c_runtime::program::Backend;
use dsv3c_runtime::Program;
use dsv3c_spec::types::{KvCacheDtype, Spec};

/// `spec/tiny.yaml` with a small vocabulary and wide weights, so that logits have clear winners.
fn spec() -> Spec {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/tiny.yaml")).unwrap();
    let mut s = dsv3c_spec::parse("tiny.yaml", &text).unwrap();
    s.vocab_size = 96;
    s.max_seq_len = 64;
    s.init_std = 0.25;
    s
}

fn shape(batch: usize, per_seq: usize, cache_len: usize) -> DecodeShape {
    DecodeShape { batch, per_seq, cache_len, cache: KvCacheDtype::F32, absorbed: true, draft: false, last_only: false }
}

/// A CPU backend for `programs`, parameters drawn from `seed`, the weights' copy made.
fn cpu(programs: &[&Program], seed: u64) -> Cpu {
    let mut c = Cpu::for_programs(programs);
    dsv3c_runtime::init::init_params(programs[0], seed, &mut c.params);
    programs[0].run(&programs[0].start, &mut c).unwrap();
    c
}

/// The logits of a prefill of `prompts` (each padded to the program's length) from position 0.
fn prefill_logits(p: &Program, c: &mut Cpu, prompts: &[Vec<u32>]) -> Vec<f32> {
    let d = p.decode.as_ref().unwrap();
    let mut tokens = vec![0.0; p.io.tokens.len];
    for (s, prompt) in prompts.iter().enumerate() {
        for (i, &t) in prompt.iter().enumerate() {
            tokens[s * d.per_seq + i] = t as f32;
        }
    }
    c.write(p.io.tokens, &tokens).unwrap();
    c.write(d.positions, &vec![0.0; p.batch]).unwrap();
    p.run(&p.forward, c).unwrap();
    Cpu::read(c, d.logits)
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![3, 17, 42, 5, 9, 61, 2], vec![88, 1, 30], vec![7, 7, 7, 50, 12]]
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn absorbed_attention_over_the_cache_agrees_with_the_training_form() {
    let s = spec();
    let dense = compile_decode(&s, DecodeShape { absorbed: false, ..shape(3, 7, 16) }).unwrap();
    let absorbed = compile_decode(&s, shape(3, 7, 16)).unwrap();
    let mut c = cpu(&[&dense, &absorbed], 5);
    let a = prefill_logits(&dense, &mut c, &prompts());
    let b = prefill_logits(&absorbed, &mut c, &prompts());
    let err = rel_l2(&b, &a);
    assert!(err < 1e-5, "absorbed vs training-form logits: relative L2 {err:e}");
    // The first positions of each sequence only: the rest is padding, equal too (causal).
    assert!(a.iter().all(|v| v.is_finite()));
}

fn greedy(prefill: &Program, step: &Program, c: &mut Cpu, prompts: &[Vec<u32>], new: usize) -> Generated {
    let programs = Programs { prefill, step };
    generate(c, &programs, prompts, new, &Sampling::default(), &[], |_, _| {}).unwrap()
}

#[test]
fn greedy_decoding_is_the_argmax_of_a_full_forward_at_every_position() {
    let s = spec();
    let (new, len) = (12, 24);
    let prefill = compile_decode(&s, DecodeShape { absorbed: false, ..shape(3, 7, len) }).unwrap();
    let step = compile_decode(&s, shape(3, 1, len)).unwrap();
    // The teacher: one dense forward over each prompt and its continuation.
    let full = compile_decode(&s, DecodeShape { absorbed: false, ..shape(3, 7 + new, len) }).unwrap();
    let mut c = cpu(&[&prefill, &step, &full], 11);
    let out = greedy(&prefill, &step, &mut c, &prompts(), new);
    assert!(out.tokens.iter().all(|t| t.len() == new));
    let seqs: Vec<Vec<u32>> = prompts().iter().zip(&out.tokens).map(|(p, t)| [p.clone(), t.clone()].concat()).collect();
    let logits = prefill_logits(&full, &mut c, &seqs);
    let v = s.vocab_size as usize;
    for (b, (p, t)) in prompts().iter().zip(&out.tokens).enumerate() {
        for (i, &tok) in t.iter().enumerate() {
            let r = b * (7 + new) + p.len() - 1 + i;
            assert_eq!(argmax(&logits[r * v..(r + 1) * v]) as u32, tok, "sequence {b}, new token {i}");
        }
    }
    // The distinct tokens show the model is not stuck on one id.
    let distinct: std::collections::BTreeSet<_> = out.tokens.iter().flatten().collect();
    assert!(distinct.len() > 3, "{:?}", out.tokens);
}

#[test]
fn mtp_speculation_at_temperature_zero_is_plain_greedy() {
    let s = spec();
    let (new, len) = (10, 24);
    let prefill = compile_decode(&s, DecodeShape { absorbed: false, ..shape(3, 7, len) }).unwrap();
    let step = compile_decode(&s, shape(3, 1, len)).unwrap();
    let with_draft = |d: DecodeShape| compile_decode(&s, DecodeShape { draft: true, ..d }).unwrap();
    // The speculative prefill computes logits for each prompt's last token only.
    let sprefill = with_draft(DecodeShape { absorbed: false, last_only: true, ..shape(3, 7, len) });
    let verify = with_draft(shape(3, 2, len));
    let mut c = cpu(&[&prefill, &step], 3);
    let plain = greedy(&prefill, &step, &mut c, &prompts(), new);
    // The MTP module's parameters (absent from the plain programs) drawn too.
    let mut c = cpu(&[&sprefill, &verify], 3);
    let spec_out = greedy(&sprefill, &verify, &mut c, &prompts(), new);
    assert_eq!(spec_out.tokens, plain.tokens);
    assert!(spec_out.drafted > 0);
    assert!(spec_out.decode_steps <= plain.decode_steps);
    assert_eq!(spec_out.decode_steps < plain.decode_steps, spec_out.accepted > 0);
}

#[test]
fn the_cache_holds_inspects_bytes() {
    let mut s = spec();
    for (format, dtype) in [(KvCacheDtype::F32, "f32"), (KvCacheDtype::Bf16, "bf16"), (KvCacheDtype::Fp8, "fp8")] {
        let p = compile_decode(&s, DecodeShape { cache: format, ..shape(2, 1, 40) }).unwrap();
        s.precision.kv_cache = format;
        let want = 2 * dsv3c_spec::kv_cache::kv_cache(&s, 40).bytes_per_sequence as usize;
        let got: usize = p.decode.as_ref().unwrap().caches.iter().map(|c| c.bytes()).sum();
        assert_eq!(got, want, "{dtype} cache");
    }
}

/// The log-probabilities a cache format gives `continuation` after `prompts` (teacher forcing
/// through the decode programs: a prefill, then one-token steps fed the given tokens).
fn score(s: &Spec, cache: KvCacheDtype, prompts: &[Vec<u32>], continuation: &[Vec<u32>]) -> Vec<f32> {
    use dsv3c_runtime::generate::sampler::logprob;
    let batch = prompts.len();
    let prefill = compile_decode(s, DecodeShape { absorbed: false, cache, ..shape(batch, 7, 24) }).unwrap();
    let step = compile_decode(s, DecodeShape { cache, ..shape(batch, 1, 24) }).unwrap();
    let mut c = cpu(&[&prefill, &step], 9);
    let v = s.vocab_size as usize;
    let logits = prefill_logits(&prefill, &mut c, prompts);
    let mut out = Vec::new();
    for (b, p) in prompts.iter().enumerate() {
        let r = b * 7 + p.len() - 1;
        out.push(logprob(&logits[r * v..(r + 1) * v], continuation[b][0] as usize));
    }
    let d = step.decode.as_ref().unwrap();
    for i in 1..continuation[0].len() {
        let tokens: Vec<f32> = continuation.iter().map(|t| t[i - 1] as f32).collect();
        let positions: Vec<f32> = prompts.iter().map(|p| (p.len() + i - 1) as f32).collect();
        c.write(step.io.tokens, &tokens).unwrap();
        c.write(d.positions, &positions).unwrap();
        step.run(&step.forward, &mut c).unwrap();
        let logits = Cpu::read(&c, d.logits);
        for b in 0..batch {
            out.push(logprob(&logits[b * v..(b + 1) * v], continuation[b][i] as usize));
        }
    }
    out
}

/// An FP8 cache (E4M3 latent, a scale per 128 values) changes the log-probabilities of the bf16
/// cache's greedy tokens, by little: their mean moves by less than 2%, and not by nothing.
#[test]
fn an_fp8_cache_stays_close_to_a_bf16_cache() {
    let s = spec();
    let prefill =
        compile_decode(&s, DecodeShape { absorbed: false, cache: KvCacheDtype::Bf16, ..shape(3, 7, 24) }).unwrap();
    let step = compile_decode(&s, DecodeShape { cache: KvCacheDtype::Bf16, ..shape(3, 1, 24) }).unwrap();
    let mut c = cpu(&[&prefill, &step], 9);
    let tokens = greedy(&prefill, &step, &mut c, &prompts(), 12).tokens;
    let mean = |x: Vec<f32>| x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
    let bf16 = mean(score(&s, KvCacheDtype::Bf16, &prompts(), &tokens));
    let fp8 = mean(score(&s, KvCacheDtype::Fp8, &prompts(), &tokens));
    let rel = ((fp8 - bf16) / bf16).abs();
    assert!(rel < 0.02 && rel > 0.0, "mean log-probability: bf16 {bf16}, fp8 {fp8}");
}

#[test]
fn bad_requests_are_refused() {
    let s = spec();
    let prefill = compile_decode(&s, DecodeShape { absorbed: false, ..shape(1, 4, 8) }).unwrap();
    let step = compile_decode(&s, shape(1, 1, 8)).unwrap();
    let mut c = cpu(&[&prefill, &step], 1);
    let programs = Programs { prefill: &prefill, step: &step };
    let run = |c: &mut Cpu, prompts: &[Vec<u32>], new| {
        generate(c, &programs, prompts, new, &Sampling::default(), &[], |_, _| {})
    };
    assert!(matches!(run(&mut c, &[vec![]], 2), Err(GenerateError::EmptyPrompt(0))));
    assert!(matches!(run(&mut c, &[vec![1, 500]], 2), Err(GenerateError::Token { index: 1, token: 500, .. })));
    assert!(matches!(run(&mut c, &[vec![1, 2, 3]], 9), Err(GenerateError::CacheTooShort { .. })));
    assert!(matches!(run(&mut c, &[vec![1, 2, 3, 4, 5]], 1), Err(GenerateError::Shape { .. })));
    assert!(matches!(run(&mut c, &[], 1), Err(GenerateError::NoPrompts)));
    assert!(compile_decode(&s, shape(1, 1, 65)).is_err(), "a cache longer than max_seq_len");
}
