//! Host-side timing of a backend's launches by op family (`dsv3c bench train --profile`).
//!
//! [`Profiled`] wraps a backend and runs every launch list launch by launch, timing each launch
//! with the host's clock. That is the launch's cost on a backend that runs synchronously (the
//! CPU, the PTX emulator); a GPU that launches asynchronously needs device events instead.
//! Reads, writes and zeroing of slices (the host's side of a step) are timed under `host ...`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::program::{launch_each, Backend, BackendError, Kernel, Launch, Slice};

/// What one op family cost over the launches recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Family {
    pub calls: u64,
    pub secs: f64,
    /// The launches' matrix-product FLOPs ([`crate::Op::matmul_flops`]).
    pub flops: u64,
}

/// Time per op family, shared between a [`Profiled`] backend and whoever reads it.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl Profile {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Family>> {
        // A panic while the lock was held left at worst one family's sums half-updated.
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, name: &'static str, secs: f64, flops: u64) {
        let mut f = self.lock();
        let e = f.entry(name).or_default();
        e.calls += 1;
        e.secs += secs;
        e.flops += flops;
    }

    /// Forgets what was recorded (after warm-up).
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// The families recorded, most time first (ties by name).
    pub fn sorted(&self) -> Vec<(&'static str, Family)> {
        let mut v: Vec<_> = self.lock().iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs).then(a.0.cmp(b.0)));
        v
    }
}

/// A backend whose launches, reads and writes are timed into a [`Profile`].
pub struct Profiled<B> {
    inner: B,
    profile: Profile,
}

impl<B: Backend> Profiled<B> {
    /// `inner`, timed into a fresh profile (read it through [`Profiled::profile`]).
    pub fn new(inner: B) -> Profiled<B> {
        Profiled { inner, profile: Profile::default() }
    }

    /// A handle on the profile, which stays readable after the backend moved into a trainer.
    pub fn profile(&self) -> Profile {
        self.profile.clone()
    }

    fn timed<T>(&mut self, name: &'static str, flops: u64, f: impl FnOnce(&mut B) -> T) -> T {
        let t = Instant::now();
        let out = f(&mut self.inner);
        self.profile.add(name, t.elapsed().as_secs_f64(), flops);
        out
    }
}

impl<B: Backend> Backend for Profiled<B> {
    fn launch(&mut self, kernel: &Kernel, args: &[Slice]) -> Result<(), BackendError> {
        self.timed(kernel.op.family(), kernel.op.matmul_flops(), |b| b.launch(kernel, args))
    }

    /// Launch by launch, so that each is timed (a recorded list would time as one).
    fn run_list(&mut self, kernels: &[Kernel], launches: &[Launch]) -> Result<(), BackendError> {
        launch_each(self, kernels, launches)
    }

    fn read(&mut self, s: Slice) -> Result<Vec<f32>, BackendError> {
        self.timed("host read", 0, |b| b.read(s))
    }

    fn write(&mut self, s: Slice, data: &[f32]) -> Result<(), BackendError> {
        self.timed("host write", 0, |b| b.write(s, data))
    }

    fn zero(&mut self, s: Slice) -> Result<(), BackendError> {
        self.timed("host zero", 0, |b| b.zero(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_suite::arenas;
    use crate::cpu::Cpu;
    use crate::dtype::DType;
    use crate::op::{Op, Quant};
    use crate::program::Launch;

    #[test]
    fn launches_are_timed_by_family_with_their_flops() {
        let p = arenas(0, 0, 4 * 64);
        let (m, n, k) = (2, 3, 4);
        let gemm =
            Op::Gemm { m, n, k, lda: k, ldb: n, ldc: n, ta: false, tb: false, accumulate: false, quant: Quant::None };
        let kernel = |op: Op| Kernel { dtypes: vec![DType::F32; op.arity()], op, device: Err("host".into()) };
        let kernels = vec![kernel(gemm), kernel(Op::Add { n: 4 })];
        let a = |at: usize, len: usize| Slice::act(4 * at, len, DType::F32);
        let launches = vec![
            Launch { kernel: 0, args: vec![a(0, 8), a(8, 12), a(20, 6)], note: "gemm".into() },
            Launch { kernel: 1, args: vec![a(0, 4), a(4, 4), a(32, 4)], note: "add".into() },
            Launch { kernel: 0, args: vec![a(0, 8), a(8, 12), a(40, 6)], note: "gemm".into() },
        ];
        let mut b = Profiled::new(Cpu::new(&p));
        let profile = b.profile();
        b.write(a(0, 20), &[1.0; 20]).unwrap();
        b.run_list(&kernels, &launches).unwrap();
        assert_eq!(b.read(a(20, 6)).unwrap(), vec![4.0; 6]);
        let got: BTreeMap<_, _> = profile.sorted().into_iter().map(|(name, f)| (name, (f.calls, f.flops))).collect();
        let want = BTreeMap::from([
            ("gemm", (2, 2 * 2 * 3 * 4 * 2)),
            ("add", (1, 0)),
            ("host write", (1, 0)),
            ("host read", (1, 0)),
        ]);
        assert_eq!(got, want);
        assert!(profile.sorted().windows(2).all(|w| w[0].1.secs >= w[1].1.secs));
        profile.reset();
        assert!(profile.sorted().is_empty());
    }
}
