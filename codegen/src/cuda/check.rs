//! Static checks that need no GPU: every launch's grid, block and shared memory within sm_90 limits, and
//! every buffer a kernel touches inside the slice (and so the arena offsets) the plan gave it.

use dsv3c_runtime::op::Op;
use dsv3c_runtime::Program;

use super::{CudaKernel, EmitError};

/// sm_90 limits.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const MAX_GRID: [u64; 3] = [(1 << 31) - 1, 65535, 65535];
/// Shared memory a block may use on sm_90 (static + dynamic, after opting in).
pub const MAX_SMEM_PER_BLOCK: u32 = 227 * 1024;
/// Static shared memory a kernel may declare.
pub const MAX_STATIC_SMEM: u32 = dsv3c_runtime::program::SMEM_WITHOUT_OPT_IN;

/// Launch shapes within the hardware's limits.
pub fn limits(k: &CudaKernel) -> Result<(), EmitError> {
    let fail = |why: String| Err(EmitError::Limits { stem: k.stem.clone(), why });
    for e in &k.entries {
        if e.block == 0 || e.block > MAX_THREADS_PER_BLOCK || e.block % 32 != 0 {
            return fail(format!("{}: block of {} threads", e.name, e.block));
        }
        for (d, (&g, &max)) in e.grid.iter().zip(&MAX_GRID).enumerate() {
            if g == 0 || g > max {
                return fail(format!("{}: grid dimension {d} is {g} (limit {max})", e.name));
            }
        }
        if e.static_smem > MAX_STATIC_SMEM {
            return fail(format!("{}: {} B of static shared memory (limit {MAX_STATIC_SMEM})", e.name, e.static_smem));
        }
        if e.static_smem + e.dynamic_smem > MAX_SMEM_PER_BLOCK {
            return fail(format!(
                "{}: {} B of shared memory (limit {MAX_SMEM_PER_BLOCK})",
                e.name,
                e.static_smem + e.dynamic_smem
            ));
        }
    }
    Ok(())
}

/// Elements of each argument the op's kernel may touch (the furthest index plus one), in launch order:
/// the lengths of the op's signature.
pub fn footprint(op: &Op) -> Vec<usize> {
    op.signature().iter().map(|a| a.len).collect()
}

/// Every launch's arguments cover what its kernel touches, inside their arenas: `Program::check`, whose
/// `check_launch` refuses a slice shorter than its argument's footprint (`BackendError::Short`) — the
/// rule every backend applies at each launch.
pub fn footprints(p: &Program) -> Result<(), EmitError> {
    p.check().map_err(|e| EmitError::Limits { stem: p.name.clone(), why: e.to_string() })
}
