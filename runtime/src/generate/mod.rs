//! Generation over decode Programs (`Program::decode`): a prefill of every prompt at once, then
//! decode steps, on any backend that holds the programs' arenas (the cache at the start of the
//! activation arena is shared by them; see [`Decode`]).
//!
//! Plain decoding runs a one-token step per new token. MTP speculative decoding (DeepSeek-V3's MTP
//! module as the drafter) runs a two-token step: the last token and the module's draft of the next,
//! so that the main model verifies the draft while it predicts; an accepted draft yields two tokens
//! for one step. At temperature 0 the output is plain greedy decoding's; with sampling the draft is
//! accepted with probability `min(1, p/q)` and a rejection resamples from `max(0, p − q)`, which
//! leaves the distribution of the output unchanged. Prompts of different lengths share a batch: each
//! sequence has its own position, and a sequence that has its tokens keeps stepping, unread,
//! until the last one is done.

// The loop walks several per-sequence arrays with one index; iterator chains would hide it.
#![allow(clippy::needless_range_loop)]

pub mod sampler;

use std::time::Instant;

use crate::program::{Backend, BackendError, Decode, Program};
use sampler::{argmax, choose, distribution, draw, logprob, Rng, Sampling};

/// Why a generation could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("no prompts")]
    NoPrompts,
    #[error("prompt {0} is empty")]
    EmptyPrompt(usize),
    #[error("prompt {seq}: token {index} is {token}, outside the vocabulary of {vocab}")]
    Token { seq: usize, index: usize, token: u32, vocab: usize },
    #[error("{0} is not a decode program")]
    NotDecode(&'static str),
    #[error("the {what} program was compiled for {got}, the generation needs {want}")]
    Shape { what: &'static str, got: String, want: String },
    #[error(
        "prompt {seq} of {len} tokens and {new} new tokens need {need} cache positions; the programs hold {cache}"
    )]
    CacheTooShort { seq: usize, len: usize, new: usize, need: usize, cache: usize },
    #[error("the prefill and step programs disagree on their parameters, weights or cache")]
    Mismatch,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What a generation produced, per sequence, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Each sequence's new tokens (without its prompt).
    pub tokens: Vec<Vec<u32>>,
    /// The log-probability under the model of each new token.
    pub logprobs: Vec<Vec<f32>>,
    pub prefill_tokens: usize,
    pub prefill_secs: f64,
    /// New tokens after the first of each sequence (which the prefill produces).
    pub decode_tokens: usize,
    pub decode_secs: f64,
    pub decode_steps: usize,
    /// MTP drafts verified, and accepted.
    pub drafted: usize,
    pub accepted: usize,
}

impl Generated {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_secs)
    }
    pub fn decode_tokens_per_sec(&self) -> f64 {
        rate(self.decode_tokens, self.decode_secs)
    }
    /// Share of the verified drafts that were accepted (none: no speculation).
    pub fn acceptance(&self) -> Option<f64> {
        (self.drafted > 0).then(|| self.accepted as f64 / self.drafted as f64)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The cache positions a generation of `new` tokens after a prompt of `len` needs with a step of
/// `per_seq` tokens: the last token is chosen, never fed, and a two-token step writes its draft
/// one past the last token it feeds. (A finished sequence's steps may reach past the cache:
/// those rows are not stored, and nothing reads them.)
pub fn cache_needed(len: usize, new: usize, per_seq: usize) -> usize {
    (len + new + per_seq).saturating_sub(2).max(len)
}

/// Checks prompts against a vocabulary.
pub fn check_prompts(prompts: &[Vec<u32>], vocab: usize) -> Result<(), GenerateError> {
    if prompts.is_empty() {
        return Err(GenerateError::NoPrompts);
    }
    for (seq, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(GenerateError::EmptyPrompt(seq));
        }
        if let Some((index, &token)) = p.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
            return Err(GenerateError::Token { seq, index, token, vocab });
        }
    }
    Ok(())
}

fn decode_of<'a>(p: &'a Program, what: &'static str) -> Result<&'a Decode, GenerateError> {
    p.decode.as_ref().ok_or(GenerateError::NotDecode(what))
}

/// A generation's programs: `prefill` (the prompts from position 0, `per_seq` ≥ the longest prompt)
/// and `step` (one new token per sequence, or two with an MTP draft, absorbed over the cache).
pub struct Programs<'a> {
    pub prefill: &'a Program,
    pub step: &'a Program,
}

impl Programs<'_> {
    /// Checks the pair against each other and against the prompts.
    fn check(&self, prompts: &[Vec<u32>], new: usize) -> Result<(&Decode, &Decode), GenerateError> {
        let (pre, step) = (decode_of(self.prefill, "prefill")?, decode_of(self.step, "step")?);
        let batch = prompts.len();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let shape = |what, p: &Program, d: &Decode, want: String| {
            Err(GenerateError::Shape { what, got: format!("batch {} x {} tokens", p.batch, d.per_seq), want })
        };
        if self.prefill.batch != batch || pre.per_seq < longest {
            return shape("prefill", self.prefill, pre, format!("batch {batch} x {longest} tokens"));
        }
        let speculative = step.draft_logits.is_some();
        let per = if speculative { 2 } else { 1 };
        if self.step.batch != batch || step.per_seq != per || step.logit_rows.is_some() {
            return shape("step", self.step, step, format!("batch {batch} x {per} tokens"));
        }
        if speculative != pre.draft_logits.is_some()
            || self.prefill.params != self.step.params
            || self.prefill.weight_bytes != self.step.weight_bytes
            || pre.caches != step.caches
            || pre.cache_len != step.cache_len
        {
            return Err(GenerateError::Mismatch);
        }
        for (seq, p) in prompts.iter().enumerate() {
            let need = cache_needed(p.len(), new, per);
            if need > pre.cache_len {
                return Err(GenerateError::CacheTooShort { seq, len: p.len(), new, need, cache: pre.cache_len });
            }
        }
        Ok((pre, step))
    }
}

/// Logits row `r` of a `[rows, vocab]` read.
fn row(logits: &[f32], r: usize, vocab: usize) -> &[f32] {
    &logits[r * vocab..(r + 1) * vocab]
}

/// Generates up to `new` tokens after each prompt; a sequence ends early at a token of `stop` (its
/// end-of-sequence ids), which it keeps. The backend holds the programs' arenas with the
/// parameters written and `start` run. `on_token(seq, token)` sees every new token as it is
/// chosen, in order per sequence.
pub fn generate(
    b: &mut dyn Backend,
    programs: &Programs,
    prompts: &[Vec<u32>],
    new: usize,
    sampling: &Sampling,
    stop: &[u32],
    mut on_token: impl FnMut(usize, u32),
) -> Result<Generated, GenerateError> {
    let pre = decode_of(programs.prefill, "prefill")?;
    let vocab = pre.logits.len / pre.logit_rows.map_or(programs.prefill.io.tokens.len, |r| r.len).max(1);
    check_prompts(prompts, vocab)?;
    let (pre, step) = programs.check(prompts, new)?;
    let batch = prompts.len();
    let speculative = step.draft_logits.is_some();
    let mut rng = Rng::new(sampling.seed);
    let mut out = Generated {
        tokens: vec![Vec::new(); batch],
        logprobs: vec![Vec::new(); batch],
        prefill_tokens: prompts.iter().map(Vec::len).sum(),
        prefill_secs: 0.0,
        decode_tokens: 0,
        decode_secs: 0.0,
        decode_steps: 0,
        drafted: 0,
        accepted: 0,
    };
    if new == 0 {
        return Ok(out);
    }
    let finished = |out: &Generated, seq: usize| {
        let t = &out.tokens[seq];
        t.len() >= new || t.last().is_some_and(|x| stop.contains(x))
    };
    let mut emit = |out: &mut Generated, seq: usize, token: usize, lp: f32| {
        if !finished(out, seq) {
            out.tokens[seq].push(token as u32);
            out.logprobs[seq].push(lp);
            on_token(seq, token as u32);
        }
    };

    // Prefill: the prompts right-padded to the program's length (causal attention keeps the
    // padding from every real position; its cache rows are overwritten before they are read).
    let t0 = Instant::now();
    let p = pre.per_seq;
    let mut tokens = vec![0.0f32; batch * p];
    for (s, prompt) in prompts.iter().enumerate() {
        for (i, &t) in prompt.iter().enumerate() {
            tokens[s * p + i] = t as f32;
        }
    }
    b.write(programs.prefill.io.tokens, &tokens)?;
    b.write(pre.positions, &vec![0.0; batch])?;
    // The row of each sequence's last prompt token: in the logits of every token, or the one row
    // per sequence a prefill computes.
    let last_rows: Vec<usize> = prompts.iter().enumerate().map(|(s, q)| s * p + q.len() - 1).collect();
    let logit_row = |s: usize| if pre.logit_rows.is_some() { s } else { last_rows[s] };
    if let Some(rows) = pre.logit_rows {
        b.write(rows, &last_rows.iter().map(|&r| r as f32).collect::<Vec<_>>())?;
    }
    programs.prefill.run(&programs.prefill.forward, b)?;
    let logits = b.read(pre.logits)?;
    // Each sequence's last token (chosen, not yet fed), its position, and its draft.
    let mut last = vec![0usize; batch];
    let mut pos: Vec<usize> = prompts.iter().map(Vec::len).collect();
    for s in 0..batch {
        let l = row(&logits, logit_row(s), vocab);
        let t = choose(l, sampling, &mut rng);
        last[s] = t;
        emit(&mut out, s, t, logprob(l, t));
    }
    let mut drafts: Vec<(usize, Vec<f64>)> = Vec::new();
    if speculative {
        // The MTP module over the prompts: position i's next token is the prompt's, or the one
        // just chosen after the last.
        let mut next = vec![0.0f32; batch * p];
        for (s, prompt) in prompts.iter().enumerate() {
            for i in 0..prompt.len() {
                next[s * p + i] = prompt.get(i + 1).map_or(last[s] as f32, |&t| t as f32);
            }
        }
        let draft = run_draft(b, programs.prefill, pre, &next)?;
        for s in 0..batch {
            drafts.push(propose(row(&draft, logit_row(s), vocab), sampling, &mut rng));
        }
    }
    out.prefill_secs = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let done = |out: &Generated| (0..batch).all(|s| finished(out, s));
    while !done(&out) {
        out.decode_steps += 1;
        let per = step.per_seq;
        let mut tokens = vec![0.0f32; batch * per];
        for s in 0..batch {
            tokens[s * per] = last[s] as f32;
            if speculative {
                tokens[s * per + 1] = drafts[s].0 as f32;
            }
        }
        // A sequence that has its tokens stays where it is (its steps are not read).
        let positions: Vec<f32> = pos.iter().map(|&x| x as f32).collect();
        b.write(programs.step.io.tokens, &tokens)?;
        b.write(step.positions, &positions)?;
        programs.step.run(&programs.step.forward, b)?;
        let logits = b.read(step.logits)?;
        if !speculative {
            for s in 0..batch {
                if finished(&out, s) {
                    continue;
                }
                let l = row(&logits, s, vocab);
                let t = choose(l, sampling, &mut rng);
                emit(&mut out, s, t, logprob(l, t));
                last[s] = t;
                pos[s] += 1;
            }
            continue;
        }
        let mut next = vec![0.0f32; batch * 2];
        let mut accepted = vec![false; batch];
        for s in 0..batch {
            if finished(&out, s) {
                continue;
            }
            let (l0, l1) = (row(&logits, 2 * s, vocab), row(&logits, 2 * s + 1, vocab));
            let (d, q) = (drafts[s].0, &drafts[s].1);
            out.drafted += 1;
            let target = distribution(l0, sampling);
            let take = if sampling.greedy() {
                argmax(l0) == d
            } else {
                rng.unit() < (target[d] / q[d].max(f64::MIN_POSITIVE)).min(1.0)
            };
            if take {
                out.accepted += 1;
                accepted[s] = true;
                emit(&mut out, s, d, logprob(l0, d));
                let t = choose(l1, sampling, &mut rng);
                emit(&mut out, s, t, logprob(l1, t));
                next[2 * s] = d as f32;
                next[2 * s + 1] = t as f32;
                last[s] = t;
                pos[s] += 2;
            } else {
                let t = if sampling.greedy() { argmax(l0) } else { draw(&residual(&target, q), &mut rng) };
                emit(&mut out, s, t, logprob(l0, t));
                next[2 * s] = t as f32;
                last[s] = t;
                pos[s] += 1;
            }
        }
        if done(&out) {
            break;
        }
        let draft = run_draft(b, programs.step, step, &next)?;
        for s in 0..batch {
            let r = if accepted[s] { 2 * s + 1 } else { 2 * s };
            drafts[s] = propose(row(&draft, r, vocab), sampling, &mut rng);
        }
    }
    out.decode_secs = t1.elapsed().as_secs_f64();
    out.decode_tokens = out.tokens.iter().map(|t| t.len().saturating_sub(1)).sum();
    Ok(out)
}

/// A draft token and the distribution it was drawn from.
fn propose(logits: &[f32], s: &Sampling, rng: &mut Rng) -> (usize, Vec<f64>) {
    if s.greedy() {
        (argmax(logits), Vec::new())
    } else {
        let q = distribution(logits, s);
        (draw(&q, rng), q)
    }
}

/// `max(0, p − q)`, normalized: what a rejected draft resamples from.
fn residual(p: &[f64], q: &[f64]) -> Vec<f64> {
    let mut r: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
    let sum: f64 = r.iter().sum();
    if sum > 0.0 {
        r.iter_mut().for_each(|v| *v /= sum);
        r
    } else {
        p.to_vec()
    }
}

/// Runs a program's draft list with `next` tokens; returns the draft logits.
fn run_draft(b: &mut dyn Backend, p: &Program, d: &Decode, next: &[f32]) -> Result<Vec<f32>, GenerateError> {
    let (Some(nt), Some(dl)) = (d.next_tokens, d.draft_logits) else {
        return Err(GenerateError::NotDecode("draft"));
    };
    b.write(nt, next)?;
    p.run(&d.draft, b)?;
    Ok(b.read(dl)?)
}
