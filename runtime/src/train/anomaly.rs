//! Finding where a step went non-finite: a launch list run one launch at a time, every output
//! each launch writes read back and scanned, the first NaN or infinity named by its launch (list,
//! index, note, op), its argument and the tensor the memory plan gave that range (a parameter, a
//! gradient, an activation buffer). What `--detect-anomaly` does on every step and what a run that
//! skipped too many steps in a row does once, on the last of them.

use crate::program::{launch_each, Backend, BackendError, Launch, Program, Slice, Space};

/// The first non-finite value of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// `start`, `forward`, `backward` or `update`.
    pub list: &'static str,
    /// The micro-batch (from 0) of a forward or backward launch.
    pub micro_batch: Option<usize>,
    /// Index of the launch in its list.
    pub launch: usize,
    /// The launch's note: its layer and what it computes.
    pub note: String,
    /// The op family.
    pub op: &'static str,
    /// The op's name for the argument.
    pub arg: &'static str,
    /// The tensor the slice belongs to.
    pub tensor: String,
    /// Element of the argument, and its value.
    pub index: usize,
    pub value: f32,
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = self.micro_batch.map(|m| format!(", micro-batch {m}")).unwrap_or_default();
        write!(
            f,
            "{} launch {}{mb} `{}` ({}) wrote {} to its output `{}` ({}) at element {}",
            self.list, self.launch, self.note, self.op, self.value, self.arg, self.tensor, self.index
        )
    }
}

/// The name of the tensor a slice lies in: a parameter (or its gradient, moment or compute copy)
/// by its checkpoint name, an activation buffer by the memory plan's name.
pub fn tensor_name(p: &Program, s: Slice) -> String {
    let elem = s.offset / s.dtype.size().max(1);
    let param = |at: usize| p.param_at(at).map(|x| &x.name);
    let name = match s.space {
        Space::Param => match p.masters() {
            Some(m) => m.element(elem).and_then(param).cloned(),
            None => param(elem).cloned(),
        },
        Space::Grad => param(elem).map(|n| format!("grad of {n}")),
        Space::Optim => {
            let (kind, at) = if elem >= p.param_len { ("exp_avg_sq", elem - p.param_len) } else { ("exp_avg", elem) };
            param(at).map(|n| format!("{kind} of {n}"))
        }
        Space::Weights => param(elem).map(|n| format!("compute copy of {n}")),
        Space::Act => p
            .buffers
            .iter()
            .find(|b| b.dtype == s.dtype && (b.offset..b.offset + b.len * b.dtype.size()).contains(&s.offset))
            .map(|b| b.name.clone()),
    };
    name.unwrap_or_else(|| format!("{:?} arena at byte {}", s.space, s.offset))
}

/// The first non-finite element of `values`.
pub fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values.iter().position(|v| !v.is_finite()).map(|i| (i, values[i]))
}

/// Runs `launches` (one of `p`'s lists, named `list`) on `b` one launch at a time, scanning what
/// each writes; returns the first non-finite output. Every launch runs — a rank of a parallel job
/// keeps in step with its peers' collectives — but only the first anomaly is kept.
pub fn run_checked<B: Backend + ?Sized>(
    p: &Program,
    b: &mut B,
    list: &'static str,
    micro_batch: Option<usize>,
    launches: &[Launch],
) -> Result<Option<Anomaly>, BackendError> {
    let mut found = None;
    for (i, l) in launches.iter().enumerate() {
        launch_each(b, &p.kernels, std::slice::from_ref(l))?;
        if found.is_some() {
            continue;
        }
        let k = &p.kernels[l.kernel];
        let sig = k.op.signature();
        for o in k.op.outputs() {
            let s = l.args[o];
            let touched = sig[o].len.min(s.len);
            let values = b.read(Slice { len: touched, ..s })?;
            if let (Some((index, value)), None) = (first_non_finite(&values), &found) {
                found = Some(Anomaly {
                    list,
                    micro_batch,
                    launch: i,
                    note: l.note.clone(),
                    op: k.op.family(),
                    arg: sig[o].name,
                    tensor: tensor_name(p, s),
                    index,
                    value,
                });
            }
        }
    }
    Ok(found)
}
