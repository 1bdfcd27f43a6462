//! Training checkpoints: `DIR/checkpoints/step-NNNNNN/` holding the model (safetensors, HF
//! names), the optimizer state, and the run state (step, tokens, data position, config hash),
//! with a manifest of CRC-32s written last. A checkpoint is written into `step-NNNNNN.partial`,
//! every file fsynced, then renamed into place, so a killed run leaves either a whole checkpoint
//! or a `.partial` folder that is ignored. Loading verifies every checksum. The oldest complete
//! checkpoints beyond `keep` are deleted.

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
}

const FILES: [&str; 5] = ["model.safetensors", "optimizer.safetensors", "state.json", "spec.yaml", "config.yaml"];

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

/// Writes a checkpoint of `step` under `dir/checkpoints/`; returns its folder.
pub fn save(
    dir: &Path,
    p: &Program,
    params: &[f32],
    opt: &State,
    run: &RunState,
    texts: &Texts<'_>,
    keep: u64,
) -> Result<PathBuf, RunCheckpointError> {
    let root = dir.join("checkpoints");
    let name = format!("step-{:06}", run.step);
    let tmp = root.join(format!("{name}.partial"));
    let done = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let model: Vec<(String, Vec<usize>, Vec<f32>)> = p
        .params
        .iter()
        .map(|x| (x.name.clone(), x.shape.clone(), params[x.offset..x.offset + x.len()].to_vec()))
        .collect();
    write_file(&tmp.join(FILES[0]), &model)?;
    let moments = vec![
        ("m".to_string(), vec![opt.m.len()], opt.m.clone()),
        ("v".to_string(), vec![opt.v.len()], opt.v.clone()),
        ("step".to_string(), vec![1], vec![opt.step as f32]),
    ];
    write_file(&tmp.join(FILES[1]), &moments)?;
    let state = serde_json::to_string_pretty(run)
        .map_err(|e| RunCheckpointError::Corrupt { path: tmp.clone(), reason: e.to_string() })?;
    std::fs::write(tmp.join(FILES[2]), state).map_err(io(&tmp))?;
    std::fs::write(tmp.join(FILES[3]), texts.spec).map_err(io(&tmp))?;
    std::fs::write(tmp.join(FILES[4]), texts.config).map_err(io(&tmp))?;
    let mut manifest = BTreeMap::new();
    for f in FILES {
        let path = tmp.join(f);
        fsync(&path)?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        manifest.insert(f.to_string(), format!("{:08x}", crc32fast::hash(&bytes)));
    }
    let mpath = tmp.join("manifest.json");
    let mut mf = std::fs::File::create(&mpath).map_err(io(&mpath))?;
    mf.write_all(serde_json::to_string_pretty(&manifest).unwrap_or_default().as_bytes()).map_err(io(&mpath))?;
    mf.sync_all().map_err(io(&mpath))?;
    fsync(&tmp)?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    fsync(&root)?;
    // Folders a killed run left half-written are never resumed from: remove them.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
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
pub struct Loaded {
    pub path: PathBuf,
    pub model: BTreeMap<String, crate::checkpoint::Tensor>,
    pub optimizer: State,
    pub run: RunState,
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
    for f in FILES {
        let bytes = std::fs::read(path.join(f)).map_err(|e| corrupt(format!("{f}: {e}")))?;
        let crc = format!("{:08x}", crc32fast::hash(&bytes));
        match manifest.get(f) {
            Some(want) if *want == crc => {}
            Some(want) => return Err(corrupt(format!("{f} has checksum {crc}, the manifest says {want}"))),
            None => return Err(corrupt(format!("{f} is not in the manifest"))),
        }
    }
    let model = read_file(&path.join(FILES[0]))?;
    let mut opt = read_file(&path.join(FILES[1]))?;
    let take = |opt: &mut BTreeMap<String, crate::checkpoint::Tensor>, k: &str| {
        opt.remove(k).map(|t| t.data).ok_or_else(|| corrupt(format!("optimizer state has no `{k}`")))
    };
    let m = take(&mut opt, "m")?;
    let v = take(&mut opt, "v")?;
    let step = take(&mut opt, "step")?.first().copied().unwrap_or(0.0) as u64;
    let run: RunState =
        serde_json::from_str(&std::fs::read_to_string(path.join(FILES[2])).map_err(|e| corrupt(e.to_string()))?)
            .map_err(|e| corrupt(format!("state.json: {e}")))?;
    Ok(Loaded { path: path.into(), model, optimizer: State { step, m, v }, run })
}
