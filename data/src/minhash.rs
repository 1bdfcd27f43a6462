//! MinHash over word n-gram shingles, and LSH banding to find candidate near duplicates.
//!
//! Each shingle hashes to 64 bits (FNV-1a over its words); permutation i maps a hash x to
//! `(a_i·x + b_i) mod (2^61 − 1)` with a_i, b_i drawn from the seed; the signature keeps each
//! permutation's minimum. Bands and rows are chosen like datasketch's: minimizing the sum of
//! false-positive and false-negative probability mass around the threshold.

use std::collections::HashMap;

use dsv3c_runtime::init::SplitMix64;

const P: u64 = (1 << 61) - 1;

/// `a·b mod (2^61 − 1)` without division: fold the high bits onto the low ones (Mersenne prime).
#[inline]
fn mul_mod(a: u64, b: u64) -> u64 {
    let prod = a as u128 * b as u128;
    let r = (prod as u64 & P) + (prod >> 61) as u64;
    let r = (r & P) + (r >> 61);
    if r >= P {
        r - P
    } else {
        r
    }
}

#[inline]
fn add_mod(a: u64, b: u64) -> u64 {
    let r = a + b;
    if r >= P {
        r - P
    } else {
        r
    }
}

fn fnv(words: &[&str]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for w in words {
        for b in w.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        h = (h ^ 0x20).wrapping_mul(0x0100_0000_01B3);
    }
    h % P
}

pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    shingle: usize,
}

impl MinHasher {
    pub fn new(permutations: usize, shingle: usize, seed: u64) -> MinHasher {
        let mut r = SplitMix64::new(seed ^ 0x005E_ED0F_4D1A);
        let a = (0..permutations).map(|_| 1 + r.next_u64() % (P - 1)).collect();
        let b = (0..permutations).map(|_| r.next_u64() % P).collect();
        MinHasher { a, b, shingle: shingle.max(1) }
    }

    /// The signature of a text (lower-cased words).
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let mut sig = vec![u64::MAX; self.a.len()];
        let k = self.shingle.min(words.len().max(1));
        if words.is_empty() {
            return sig;
        }
        for w in words.windows(k) {
            let x = fnv(w);
            for (s, (a, b)) in sig.iter_mut().zip(self.a.iter().zip(&self.b)) {
                let v = add_mod(mul_mod(*a, x), *b);
                if v < *s {
                    *s = v;
                }
            }
        }
        sig
    }
}

/// Estimated Jaccard similarity of two signatures.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// (bands, rows) for `threshold` with `permutations` (bands·rows ≤ permutations).
pub fn optimal_bands(threshold: f64, permutations: usize) -> (usize, usize) {
    let integrate = |f: &dyn Fn(f64) -> f64, lo: f64, hi: f64| {
        let steps = 200;
        let h = (hi - lo) / steps as f64;
        (0..steps).map(|i| f(lo + (i as f64 + 0.5) * h) * h).sum::<f64>()
    };
    let mut best = (1, permutations, f64::INFINITY);
    for b in 1..=permutations {
        for r in 1..=permutations / b {
            let p = |s: f64| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
            let fp = integrate(&p, 0.0, threshold);
            let fneg = integrate(&|s| 1.0 - p(s), threshold, 1.0);
            let err = 0.5 * fp + 0.5 * fneg;
            if err < best.2 {
                best = (b, r, err);
            }
        }
    }
    (best.0, best.1)
}

/// An LSH index of kept documents: per band, the first document whose band hashed to each key.
/// Memory is one entry per band per kept document — the signatures themselves are not kept, so
/// a collision in any band marks a near duplicate (datasketch's MinHashLSH semantics).
pub struct Lsh {
    rows: usize,
    buckets: Vec<HashMap<u64, u32>>,
    next: u32,
}

impl Lsh {
    pub fn new(bands: usize, rows: usize) -> Lsh {
        Lsh { rows, buckets: vec![HashMap::new(); bands], next: 0 }
    }

    fn band_hash(&self, sig: &[u64], band: usize) -> u64 {
        sig[band * self.rows..(band + 1) * self.rows]
            .iter()
            .fold(0xCBF2_9CE4_8422_2325u64, |h, v| (h ^ v).wrapping_mul(0x0100_0000_01B3))
    }

    /// The earliest kept document sharing a band with `sig`, if any.
    pub fn query(&self, sig: &[u64]) -> Option<u32> {
        (0..self.buckets.len()).filter_map(|b| self.buckets[b].get(&self.band_hash(sig, b)).copied()).min()
    }

    /// Indexes a kept document; returns its id.
    pub fn insert(&mut self, sig: &[u64]) -> u32 {
        let id = self.next;
        self.next += 1;
        for b in 0..self.buckets.len() {
            let h = self.band_hash(sig, b);
            self.buckets[b].entry(h).or_insert(id);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mersenne_reduction_matches_the_remainder() {
        let mut r = SplitMix64::new(9);
        for _ in 0..100_000 {
            let (a, b) = (r.next_u64() % P, r.next_u64() % P);
            assert_eq!(mul_mod(a, b) as u128, (a as u128 * b as u128) % P as u128);
            assert_eq!(add_mod(a, b) as u128, (a as u128 + b as u128) % P as u128);
        }
        assert_eq!(mul_mod(P - 1, P - 1), 1);
    }

    #[test]
    fn similar_texts_have_similar_signatures() {
        let m = MinHasher::new(128, 3, 1);
        let a: String = (0..300).map(|i| format!("w{} ", (i * 37) % 211)).collect();
        let mut b: Vec<String> = a.split_whitespace().map(String::from).collect();
        b[150] = "changed".into();
        let b = b.join(" ");
        let c: String = (0..300).map(|i| format!("w{} ", (i * 53 + 7) % 211)).collect();
        assert!(jaccard(&m.signature(&a), &m.signature(&b)) > 0.9);
        assert!(jaccard(&m.signature(&a), &m.signature(&c)) < 0.1);
    }

    #[test]
    fn bands_for_0_8_put_the_threshold_near_0_8() {
        let (b, r) = optimal_bands(0.8, 128);
        assert!(b * r <= 128);
        let t = (1.0 / b as f64).powf(1.0 / r as f64);
        assert!((0.65..0.9).contains(&t), "b={b} r={r} t={t}");
    }
}
