//! Parameter initialization, deterministic per (seed, parameter name): reordering parameters or
//! changing the arena layout does not change any value. SplitMix64 draws, Box–Muller normals.

use crate::program::{Init, Program};

/// SplitMix64: a small, well-mixed 64-bit generator.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// FNV-1a hash of a name, to seed each parameter's stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

/// Fills `params` (the parameter arena of `p`) from each parameter's init rule.
pub fn init_params(p: &Program, seed: u64, params: &mut [f32]) {
    for prm in &p.params {
        let out = &mut params[prm.offset..prm.offset + prm.len()];
        match prm.init {
            Init::Normal { std } => {
                let mut rng = SplitMix64::new(seed ^ name_hash(&prm.name));
                for v in out.iter_mut() {
                    *v = (rng.normal() * std as f64) as f32;
                }
            }
            Init::Ones => out.fill(1.0),
            Init::Zeros => out.fill(0.0),
            Init::Const(c) => out.fill(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_variance() {
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
    }
}
