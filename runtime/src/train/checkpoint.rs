//! Training checkpoints: `DIR/checkpoints/step-NNNNNN/` holding the model (safetensors, HF
//! names), the optimizer state (each parameter's moments by name), and the run state (step,
//! tokens, data position, config hash), with a manifest of CRC-32s written last. A checkpoint is
//! written into `step-NNNNNN.partial`, every file fsynced, then renamed into place, so a killed run
//! leaves either a whole checkpoint or a `.partial` folder that is ignored. Loading verifies every
//! checksum. The oldest complete checkpoints beyond `keep` are deleted.
//!
//! One device writes `model.safetensors` and `optimizer.safetensors`; the ranks of a parallel job
//! write theirs in parallel — `model-RRRRR-of-WWWWW.safetensors` and `optimizer-…` — each holding
//! the parameters the rank owns (of the ranks holding a parameter alike, the first), and rank 0
//! completes the folder. Whatever wrote it, a checkpoint is a set of tensors by name: any layout
//! loads it, each rank taking the parameters (and the shard of their moments) it holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{read_file, write_file, CheckpointError};
use crate::data::loader::Position;
use crate::program::Program;
use crate::train::optim::State;

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub step: u64,
    pub tokens: u64,
    pub position: Position,
    pub seed: u64,
    /// CRC-32 of the spec and the recipe settings that shape the run (not `steps`/logging).
    pub config_hash: String,
    pub spec: String,
    /// The step guard's memory, so that a resumed run skips what the uninterrupted run would.
    #[serde(default)]
    pub guard: GuardState,
}

impl RunState {
    /// The state of a run that has taken no step.
    pub fn fresh(seed: u64, config_hash: String, spec: String) -> RunState {
        RunState {
            step: 0,
            tokens: 0,
            position: Default::default(),
            seed,
            config_hash,
            spec,
            guard: Default::default(),
        }
    }
}

impl RunState {
    /// Whether the values can be a run's: counts a run can reach, and a guard window of finite
    /// norms. A state that fails this came from a damaged or hand-edited file.
    pub fn check(&self) -> Result<(), String> {
        let g = &self.guard;
        if self.step > MAX_STEP {
            return Err(format!("step {} is beyond any run (at most 2^53)", self.step));
        }
        if self.tokens > dsv3c_spec::config::MAX_TOKENS {
            return Err(format!("{} tokens is beyond any run (at most 10^18)", self.tokens));
        }
        if g.skipped > self.step || g.skipped_in_row > g.skipped {
            return Err(format!(
                "the guard counts {} skipped steps ({} in a row) after {} steps",
                g.skipped, g.skipped_in_row, self.step
            ));
        }
        if g.norms.len() > 10_000 || g.norms.iter().any(|n| !n.is_finite() || *n < 0.0) {
            return Err("the guard's window holds more than 10000 norms, or one that is not finite".into());
        }
        Ok(())
    }
}

/// The largest step a run state may hold (exact in an f64, far from u64's overflow).
pub const MAX_STEP: u64 = 1 << 53;

/// What the step guard remembers between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// Steps skipped in a row, up to the last.
    pub skipped_in_row: u64,
    /// Steps skipped in the whole run.
    pub skipped: u64,
    /// The averaged gradient norms of the last applied steps (the spike guard's window), oldest
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub norms: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunCheckpointError {
    #[error("cannot write checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tensors(#[from] CheckpointError),
    #[error("checkpoint {path} is corrupt: {reason}; delete it to resume from an earlier one")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {0} does not exist")]
    NotFound(PathBuf),
    #[error("{path} is not a checkpoint (it has no manifest.json){hint}")]
    NotACheckpoint { path: PathBuf, hint: String },
    #[error("refusing to write checkpoint step {step}: {tensor} holds {value} at element {index}; the earlier checkpoints are kept")]
    NonFinite { step: u64, tensor: String, index: usize, value: f32 },
    #[error("checkpoint step {step}: {source}; the earlier checkpoints are kept")]
    Job { step: u64, source: crate::comm::CommError },
}

const FILES: [&str; 5] = ["model.safetensors", "optimizer.safetensors", "state.json", "spec.yaml", "config.yaml"];

/// The files every checkpoint holds besides its tensors.
const TEXTS: [&str; 3] = ["state.json", "spec.yaml", "config.yaml"];

fn io(path: &Path) -> impl Fn(std::io::Error) -> RunCheckpointError + '_ {
    move |source| RunCheckpointError::Io { path: path.into(), source }
}

fn fsync(path: &Path) -> Result<(), RunCheckpointError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// The texts a checkpoint carries so that it describes itself: the spec and the run recipe.
pub struct Texts<'a> {
    pub spec: &'a str,
    pub config: &'a str,
}

/// The first NaN or infinity among the parameters and moments, by tensor name.
fn first_non_finite(p: &Program, params: &[f32], opt: &State) -> Option<(String, usize, f32)> {
    let arenas: [(&str, &[f32]); 3] = [("", params), ("exp_avg of ", &opt.m), ("exp_avg_sq of ", &opt.v)];
    for (what, arena) in arenas {
        if let Some((at, value)) = crate::train::anomaly::first_non_finite(arena) {
            let (name, index) =
                p.param_at(at).map_or(("(padding)".to_string(), at), |x| (x.name.clone(), at - x.offset));
            return Some((format!("{what}{name}"), index, value));
        }
    }
    None
}

/// Writes a checkpoint of `step` under `dir/checkpoints/`; returns its folder. Parameters or
/// moments holding a NaN or an infinity are refused. A write that fails (a full disk, say) leaves
/// every earlier checkpoint as it was and removes its own partial folder.
pub fn save(
    dir: &Path,
    p: &Program,
    params: &[f32],
    opt: &State,
    run: &RunState,
    texts: &Texts<'_>,
    keep: u64,
) -> Result<PathBuf, RunCheckpointError> {
    if let Some((tensor, index, value)) = first_non_finite(p, params, opt) {
        return Err(RunCheckpointError::NonFinite { step: run.step, tensor, index, value });
    }
    let name = format!("step-{:06}", run.step);
    let tmp = dir.join("checkpoints").join(format!("{name}.partial"));
    let written = write_partial(&tmp, p, params, opt, run, texts);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    complete(dir, &tmp, &name, keep)
}

/// Writes every file of a checkpoint into `tmp` and fsyncs them, the manifest last.
fn write_partial(
    tmp: &Path,
    p: &Program,
    params: &[f32],
    opt: &State,
    run: &RunState,
    texts: &Texts<'_>,
) -> Result<(), RunCheckpointError> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io(tmp))?;
    }
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    let all: Vec<&crate::program::Param> = p.params.iter().collect();
    let mut files = write_tensors(tmp, [FILES[0], FILES[1]], &all, params, opt, true)?;
    for f in TEXTS {
        write_text(tmp, f, run, texts)?;
        files.push((f.to_string(), crc(&tmp.join(f))?));
    }
    write_manifest(tmp, &files)
}

/// Writes the parameters `own` (and their moments, and with `step` the optimizer's step count)
/// into the files `names` (model, optimizer) under `tmp`, fsynced; returns each file's name and
/// CRC-32.
fn write_tensors(
    tmp: &Path,
    names: [&str; 2],
    own: &[&crate::program::Param],
    params: &[f32],
    opt: &State,
    step: bool,
) -> Result<Vec<(String, String)>, RunCheckpointError> {
    let model: Vec<(String, Vec<usize>, Vec<f32>)> =
        own.iter().map(|x| (x.name.clone(), x.shape.clone(), params[x.offset..x.offset + x.len()].to_vec())).collect();
    write_file(&tmp.join(names[0]), &model)?;
    // The moments per parameter, by name (the arena's layout is the compiler's business: a checkpoint
    // must resume under another layout, or be refused, never read at the wrong offsets).
    let mut moments: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(2 * own.len() + 1);
    for x in own {
        let r = x.offset..x.offset + x.len();
        moments.push((format!("exp_avg.{}", x.name), x.shape.clone(), opt.m[r.clone()].to_vec()));
        if !opt.v.is_empty() {
            moments.push((format!("exp_avg_sq.{}", x.name), x.shape.clone(), opt.v[r].to_vec()));
        }
    }
    if step {
        moments.push(("step".to_string(), vec![1], vec![opt.step as f32]));
    }
    write_file(&tmp.join(names[1]), &moments)?;
    names.iter().map(|f| Ok((f.to_string(), crc(&tmp.join(f))?))).collect()
}

/// Writes one of the run's texts (`state.json`, `spec.yaml`, `config.yaml`) under `tmp`.
fn write_text(tmp: &Path, f: &str, run: &RunState, texts: &Texts<'_>) -> Result<(), RunCheckpointError> {
    let state;
    let text = match f {
        "state.json" => {
            state = serde_json::to_string_pretty(run)
                .map_err(|e| RunCheckpointError::Corrupt { path: tmp.into(), reason: e.to_string() })?;
            state.as_str()
        }
        "spec.yaml" => texts.spec,
        _ => texts.config,
    };
    let path = tmp.join(f);
    std::fs::write(&path, text).map_err(io(&path))
}

/// The CRC-32 of a file once it is on disk (fsynced, then read back).
fn crc(path: &Path) -> Result<String, RunCheckpointError> {
    fsync(path)?;
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(format!("{:08x}", crc32fast::hash(&bytes)))
}

/// Writes `tmp/manifest.json` (each file's CRC-32), fsynced with the folder.
fn write_manifest(tmp: &Path, files: &[(String, String)]) -> Result<(), RunCheckpointError> {
    let manifest: BTreeMap<&str, &str> = files.iter().map(|(f, c)| (f.as_str(), c.as_str())).collect();
    let mpath = tmp.join("manifest.json");
    let mut mf = std::fs::File::create(&mpath).map_err(io(&mpath))?;
    mf.write_all(serde_json::to_string_pretty(&manifest).unwrap_or_default().as_bytes()).map_err(io(&mpath))?;
    mf.sync_all().map_err(io(&mpath))?;
    fsync(tmp)
}

/// Moves a written `tmp` folder into place as `root/name` (replacing a checkpoint of the same
/// step), removes folders killed runs left half-written, and keeps the newest `keep`.
fn complete(dir: &Path, tmp: &Path, name: &str, keep: u64) -> Result<PathBuf, RunCheckpointError> {
    let root = dir.join("checkpoints");
    let done = root.join(name);
    // A checkpoint of the same step (a run resumed from before it) is replaced: moved aside first,
    // so that a kill in between leaves one of the two whole.
    let old = root.join(format!("{name}.replaced"));
    if done.exists() {
        std::fs::rename(&done, &old).map_err(io(&done))?;
    }
    std::fs::rename(tmp, &done).map_err(io(&done))?;
    fsync(&root)?;
    // Folders a killed run left half-written are never resumed from: remove them.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".partial") || n.ends_with(".replaced") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    // Keep the newest `keep` complete checkpoints.
    let mut all = list(dir);
    while all.len() as u64 > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(done)
}

/// One rank's share of a parallel job's checkpoint: its program, parameters and (assembled)
/// optimizer state.
pub struct Part<'a> {
    pub program: &'a Program,
    pub params: &'a [f32],
    pub opt: &'a State,
}

impl Part<'_> {
    /// The parameters this rank writes: of the ranks holding a parameter alike, the first — the
    /// first data-parallel rank of its stage, or for a routed expert the first rank of its
    /// expert-data-parallel group; a copy that another rank holds too (the last stage's token
    /// embedding) is the other rank's.
    pub fn owned(&self) -> Vec<&crate::program::Param> {
        let p = self.program;
        let Some(r) = &p.rank else { return p.params.iter().collect() };
        let first_expert_holder = r.place.index_in(crate::comm::CommGroup::ExpertData) == Some(0);
        p.params
            .iter()
            .filter(|x| !r.copies.iter().any(|c| (c.0..c.1).contains(&x.offset)))
            .filter(|x| {
                let expert = (r.expert_params.0..r.expert_params.1).contains(&x.offset);
                if expert {
                    first_expert_holder
                } else {
                    r.place.dp_rank() == 0
                }
            })
            .collect()
    }
}

/// Writes this rank's part of a parallel job's checkpoint of `run.step` under
/// `dir/checkpoints/`, in step with every other rank of `comms` (every rank calls it): rank 0
/// makes the folder, every rank writes the parameters it owns and their moments (after checking
/// they are finite), rank 0 writes the run's texts and the manifest of every rank's files and
/// moves the folder into place. A rank that fails stops the job naming itself (the others'
/// collectives return its error), and the earlier checkpoints stay as they were. Returns the
/// folder on rank 0, `None` on the others.
pub fn save_parallel(
    dir: &Path,
    part: &Part<'_>,
    run: &RunState,
    texts: &Texts<'_>,
    keep: u64,
    comms: &crate::comm::Comms,
) -> Result<Option<PathBuf>, RunCheckpointError> {
    let world = comms.world();
    let (rank, ranks) = (comms.place.rank, comms.place.mesh.world());
    let name = format!("step-{:06}", run.step);
    let tmp = dir.join("checkpoints").join(format!("{name}.partial"));
    let job = |source| RunCheckpointError::Job { step: run.step, source };
    // Every step that can fail locally reports here: a failure aborts the job with its message.
    let fail = |e: RunCheckpointError| {
        comms.abort(&e.to_string());
        if rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        e
    };
    let own = part.owned();
    if let Some((tensor, index, value)) = first_non_finite_of(&own, part.params, part.opt) {
        return Err(fail(RunCheckpointError::NonFinite { step: run.step, tensor, index, value }));
    }
    if rank == 0 {
        let made = (|| {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(io(&tmp))
        })();
        made.map_err(fail)?;
    }
    // The folder exists before any rank writes into it.
    world.all_reduce_f64(&mut [0.0]).map_err(job)?;
    let names = [
        format!("model-{:05}-of-{ranks:05}.safetensors", rank),
        format!("optimizer-{:05}-of-{ranks:05}.safetensors", rank),
    ];
    let mine = if own.is_empty() {
        Vec::new()
    } else {
        write_tensors(&tmp, [names[0].as_str(), names[1].as_str()], &own, part.params, part.opt, rank == 0)
            .map_err(fail)?
    };
    // Every rank's files and checksums, through the world: 2 per rank, CRC + 1 (0: none written).
    let mut crcs = vec![0.0f64; 2 * ranks];
    for (i, (_, c)) in mine.iter().enumerate() {
        crcs[2 * rank + i] = u32::from_str_radix(c, 16).unwrap_or(0) as f64 + 1.0;
    }
    world.all_reduce_f64(&mut crcs).map_err(job)?;
    let mut path = None;
    if rank == 0 {
        let finish = || {
            let mut files = Vec::new();
            for r in 0..ranks {
                for (i, kind) in ["model", "optimizer"].iter().enumerate() {
                    let c = crcs[2 * r + i];
                    if c > 0.0 {
                        files.push((
                            format!("{kind}-{r:05}-of-{ranks:05}.safetensors"),
                            format!("{:08x}", (c - 1.0) as u32),
                        ));
                    }
                }
            }
            for f in TEXTS {
                write_text(&tmp, f, run, texts)?;
                files.push((f.to_string(), crc(&tmp.join(f))?));
            }
            write_manifest(&tmp, &files)?;
            complete(dir, &tmp, &name, keep)
        };
        path = Some(finish().map_err(fail)?);
    }
    // Rank 0 has moved the folder into place: the checkpoint is whole for every rank.
    world.all_reduce_f64(&mut [0.0]).map_err(job)?;
    Ok(path)
}

/// The first NaN or infinity among the parameters `own` and their moments, by tensor name.
fn first_non_finite_of(own: &[&crate::program::Param], params: &[f32], opt: &State) -> Option<(String, usize, f32)> {
    let arenas: [(&str, &[f32]); 3] = [("", params), ("exp_avg of ", &opt.m), ("exp_avg_sq of ", &opt.v)];
    for (what, arena) in arenas {
        for x in own {
            let Some(values) = arena.get(x.offset..x.offset + x.len()) else { continue };
            if let Some((i, value)) = crate::train::anomaly::first_non_finite(values) {
                return Some((format!("{what}{}", x.name), i, value));
            }
        }
    }
    None
}

/// Complete checkpoints under `dir/checkpoints/`, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else { return Vec::new() };
    let mut v: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub model: BTreeMap<String, crate::checkpoint::Tensor>,
    pub optimizer: SavedMoments,
    pub run: RunState,
}

/// The optimizer state of a checkpoint: the step count and each parameter's moments by name
/// (`exp_avg.<name>`, and AdamW's `exp_avg_sq.<name>`).
#[derive(Debug, Clone)]
pub struct SavedMoments {
    pub step: u64,
    pub tensors: BTreeMap<String, crate::checkpoint::Tensor>,
}

impl SavedMoments {
    /// The moments laid out as `p`'s optimizer arena (`m`, then `v`), every parameter's found by
    /// name with its shape; or why they do not fit.
    pub fn arena(&self, p: &Program) -> Result<Vec<f32>, StateMismatch> {
        let shards = p.rank.as_ref().map_or(&[][..], |r| &r.zero[..]);
        match shards.first() {
            Some(z) => {
                let full = self.single_device_arena(p, z.moments)?;
                let mut out = vec![0.0; p.optim_len];
                for z in shards {
                    z.take(&full, p.param_len, &mut out);
                }
                Ok(out)
            }
            None => self.single_device_arena(p, if p.optim_len >= 2 * p.param_len { 2 } else { 1 }),
        }
    }

    /// The moments (`moments` of them: 2 for AdamW, 1 for Lion) in the optimizer arena of a
    /// single-device program with `p`'s parameters: `moments × param_len` elements, moment `k` of
    /// element `e` at `k·param_len + e` (a ZeRO-1 rank takes its shard of it).
    pub fn single_device_arena(&self, p: &Program, moments: usize) -> Result<Vec<f32>, StateMismatch> {
        if self.tensors.contains_key("m") {
            return Err(StateMismatch::LayoutDependent);
        }
        let n = p.param_len;
        let mut arena = vec![0.0f32; moments * n];
        let moments: &[(&str, usize)] =
            if moments >= 2 { &[("exp_avg", 0), ("exp_avg_sq", n)] } else { &[("exp_avg", 0)] };
        for &(kind, base) in moments {
            for x in &p.params {
                let name = format!("{kind}.{}", x.name);
                let t = self.tensors.get(&name).ok_or_else(|| StateMismatch::Missing(name.clone()))?;
                if t.shape != x.shape {
                    return Err(StateMismatch::Shape { name, found: t.shape.clone(), expected: x.shape.clone() });
                }
                arena[base + x.offset..base + x.offset + x.len()].copy_from_slice(&t.data);
            }
        }
        Ok(arena)
    }
}

/// Optimizer state that does not fit a Program.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateMismatch {
    #[error("the optimizer state has no `{0}` (a different model or optimizer)")]
    Missing(String),
    #[error("`{name}` has shape {found:?}, the model's parameter {expected:?}")]
    Shape { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("the optimizer state is one blob in an older parameter layout (before moments were saved by name); it cannot be resumed safely — start a new run")]
    LayoutDependent,
}

/// Loads and verifies the checkpoint in `path`. A folder that is missing, or holds no
/// manifest (a run folder, say), is named as such: only a checkpoint whose files disagree with
/// its manifest is called corrupt.
pub fn load(path: &Path) -> Result<Loaded, RunCheckpointError> {
    if !path.is_dir() {
        return Err(RunCheckpointError::NotFound(path.into()));
    }
    if !path.join("manifest.json").exists() {
        let hint = match list(path).pop() {
            Some((_, newest)) => format!("; it holds a run: pass one of its checkpoints, e.g. {}", newest.display()),
            None => String::new(),
        };
        return Err(RunCheckpointError::NotACheckpoint { path: path.into(), hint });
    }
    let corrupt = |reason: String| RunCheckpointError::Corrupt { path: path.into(), reason };
    let mtext =
        std::fs::read_to_string(path.join("manifest.json")).map_err(|e| corrupt(format!("manifest.json: {e}")))?;
    let manifest: BTreeMap<String, String> =
        serde_json::from_str(&mtext).map_err(|e| corrupt(format!("manifest.json: {e}")))?;
    // One device's files, or each rank's of a parallel job.
    let tensors = |kind: &str| -> Vec<String> {
        manifest
            .keys()
            .filter(|f| {
                f.strip_suffix(".safetensors")
                    .and_then(|f| f.strip_prefix(kind))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
            .cloned()
            .collect()
    };
    let (model_files, opt_files) = (tensors("model"), tensors("optimizer"));
    for (kind, files) in [("model", &model_files), ("optimizer", &opt_files)] {
        if files.is_empty() {
            return Err(corrupt(format!("the manifest lists no {kind} file")));
        }
    }
    for f in TEXTS {
        if !manifest.contains_key(f) {
            return Err(corrupt(format!("{f} is not in the manifest")));
        }
    }
    for f in manifest.keys() {
        if f.contains('/') || f.contains("..") {
            return Err(corrupt(format!("the manifest names `{f}`, which is not a file of the checkpoint")));
        }
        let bytes = std::fs::read(path.join(f)).map_err(|e| corrupt(format!("{f}: {e}")))?;
        let crc = format!("{:08x}", crc32fast::hash(&bytes));
        let want = &manifest[f];
        if *want != crc {
            return Err(corrupt(format!("{f} has checksum {crc}, the manifest says {want}")));
        }
    }
    // Each rank's tensors together: a name written twice is a damaged checkpoint.
    let merge = |files: &[String]| -> Result<BTreeMap<String, crate::checkpoint::Tensor>, RunCheckpointError> {
        let mut all = BTreeMap::new();
        for f in files {
            for (name, t) in read_file(&path.join(f))? {
                if all.insert(name.clone(), t).is_some() {
                    return Err(corrupt(format!("`{name}` is in two files (the second: {f})")));
                }
            }
        }
        Ok(all)
    };
    let model = merge(&model_files)?;
    let mut opt = merge(&opt_files)?;
    let step = opt
        .remove("step")
        .and_then(|t| (t.data.len() == 1).then_some(t.data[0]))
        .ok_or_else(|| corrupt("optimizer state has no `step` (one number)".into()))?;
    if !(step >= 0.0 && step <= MAX_STEP as f32 && step.fract() == 0.0) {
        return Err(corrupt(format!("the optimizer's step is {step}, not a step count")));
    }
    let step = step as u64;
    let run: RunState =
        serde_json::from_str(&std::fs::read_to_string(path.join(FILES[2])).map_err(|e| corrupt(e.to_string()))?)
            .map_err(|e| corrupt(format!("state.json: {e}")))?;
    run.check().map_err(|e| corrupt(format!("state.json: {e}")))?;
    if step > run.step {
        return Err(corrupt(format!("the optimizer has taken {step} steps, the run state says {}", run.step)));
    }
    Ok(Loaded { path: path.into(), model, optimizer: SavedMoments { step, tensors: opt }, run })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Init, Param, ParamGroup};

    fn program() -> Program {
        let mut p = crate::backend_suite::arenas(10, 20, 0);
        let param = |name: &str, shape: Vec<usize>, offset| Param {
            name: name.into(),
            shape,
            offset,
            init: Init::Zeros,
            group: ParamGroup::Decay,
        };
        p.params = vec![param("a.weight", vec![2, 3], 4), param("b.weight", vec![4], 0)];
        p
    }

    /// Moments are saved by parameter name and land at each parameter's offset of whatever layout
    /// resumes them; a state in the old layout-dependent blob, or missing a parameter, is refused.
    #[test]
    fn moments_resume_by_name_and_old_blobs_are_refused() {
        let p = program();
        let dir = std::env::temp_dir().join(format!("dsv3c-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let arena: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let opt = State::from_arena(&p, 7, &arena);
        let run = RunState { step: 7, ..RunState::fresh(1, String::new(), String::new()) };
        let texts = Texts { spec: "", config: "" };
        let path = save(&dir, &p, &[0.0; 10], &opt, &run, &texts, 1).unwrap();
        let l = load(&path).unwrap();
        assert_eq!(l.optimizer.step, 7);
        assert_eq!(l.optimizer.arena(&p).unwrap(), arena);
        // Another layout: b after a. Each parameter's moments follow it.
        let mut q = program();
        q.params[0].offset = 0;
        q.params[1].offset = 6;
        let moved = l.optimizer.arena(&q).unwrap();
        assert_eq!(moved[..6], arena[4..10]);
        assert_eq!(moved[6..10], arena[..4]);
        assert_eq!(moved[16..20], arena[10..14]);
        let mut missing = l.optimizer.clone();
        missing.tensors.remove("exp_avg_sq.b.weight");
        assert_eq!(missing.arena(&p), Err(StateMismatch::Missing("exp_avg_sq.b.weight".into())));
        let mut blob = l.optimizer.clone();
        blob.tensors.insert("m".into(), crate::checkpoint::Tensor { shape: vec![10], data: vec![0.0; 10] });
        assert_eq!(blob.arena(&p), Err(StateMismatch::LayoutDependent));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
