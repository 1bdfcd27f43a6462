//! Choosing the next token from logits: greedy at temperature 0, else a draw from the softmax of
//! `logits / temperature` restricted to the `top_k` most likely tokens and then to the smallest set
//! whose probability reaches `top_p` — seeded, so that a run is reproducible. Each choice also
//! reports the token's log-probability under the model (the softmax of the raw logits).

/// How tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy (argmax; ties go to the lowest id).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest most-likely set whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    pub fn greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// The generation's random stream: the parameters' SplitMix64, one stream per generation.
pub use crate::init::SplitMix64 as Rng;

/// The index of the largest value (the first of equals); NaN never wins.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// `log softmax(logits)[token]`: exponentials in f32 (each at most 1), summed in f64.
pub fn logprob(logits: &[f32], token: usize) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| (v - max).exp() as f64).sum();
    ((logits[token] - max) as f64 - sum.ln()) as f32
}

/// The distribution tokens are drawn from: softmax of `logits / temperature` over the top-k,
/// top-p set (zero elsewhere), as f64 probabilities summing to 1. Greedy: all mass on the argmax.
pub fn distribution(logits: &[f32], s: &Sampling) -> Vec<f64> {
    let mut p = vec![0.0f64; logits.len()];
    if s.greedy() {
        p[argmax(logits)] = 1.0;
        return p;
    }
    let t = s.temperature as f64;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if s.top_k > 0 {
        order.truncate(s.top_k.min(order.len()));
    }
    let max = logits[order[0]] as f64;
    let w: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut kept = 0.0;
    let mut n = 0;
    for &wi in &w {
        kept += wi / total;
        n += 1;
        if kept >= s.top_p as f64 {
            break;
        }
    }
    let sum: f64 = w[..n].iter().sum();
    for (j, &i) in order[..n].iter().enumerate() {
        p[i] = w[j] / sum;
    }
    p
}

/// A draw from a distribution (the last token with mass if rounding leaves the draw past the end).
pub fn draw(p: &[f64], rng: &mut Rng) -> usize {
    let u = rng.unit();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > 0.0 {
            acc += v;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// The next token from `logits`: greedy, or a draw under `s`.
pub fn choose(logits: &[f32], s: &Sampling, rng: &mut Rng) -> usize {
    if s.greedy() {
        argmax(logits)
    } else {
        draw(&distribution(logits, s), rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(choose(&[0.5, 0.1, 2.0], &Sampling::default(), &mut Rng::new(1)), 2);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [2.0, 1.0, 0.0, -1.0, -2.0];
        let s = Sampling { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 0 };
        let p = distribution(&logits, &s);
        assert!(p[0] > 0.0 && p[1] > 0.0 && p[2..].iter().all(|&v| v == 0.0));
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Softmax of [2, 1, 0, -1, -2]: the first is 0.636, the first two 0.87.
        let s = Sampling { temperature: 1.0, top_k: 0, top_p: 0.8, seed: 0 };
        let p = distribution(&logits, &s);
        assert_eq!(p.iter().filter(|&&v| v > 0.0).count(), 2);
        let s = Sampling { temperature: 1.0, top_k: 0, top_p: 0.5, seed: 0 };
        assert_eq!(distribution(&logits, &s).iter().filter(|&&v| v > 0.0).count(), 1);
    }

    #[test]
    fn draws_follow_the_distribution_and_repeat_with_the_seed() {
        let logits = [0.0f32, (3.0f32).ln()];
        let s = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0 };
        let mut rng = Rng::new(7);
        let n = 20000;
        let ones = (0..n).filter(|_| choose(&logits, &s, &mut rng) == 1).count();
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.02, "{ones}");
        let run = |seed| {
            let mut r = Rng::new(seed);
            (0..50).map(|_| choose(&logits, &s, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn logprob_is_the_log_softmax() {
        let lp = logprob(&[0.0, (3.0f32).ln()], 1);
        assert!((lp - 0.75f32.ln()).abs() < 1e-6);
    }
}
