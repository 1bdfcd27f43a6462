//! Safetensors checkpoints by Hugging Face name: reading (one file or a sharded index; f32, f64,
//! bf16, f16, and FP8 E4M3 weights with their 128×128 `weight_scale_inv` blocks) and writing f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// One tensor, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` has dtype {dtype:?}, which dsv3c cannot read (f32, f64, bf16, f16, f8_e4m3)")]
    Dtype { path: PathBuf, name: String, dtype: Dtype },
    #[error("{path}: FP8 tensor `{name}` has no `{name}_scale_inv` beside it")]
    MissingScale { path: PathBuf, name: String },
    #[error("{path}: FP8 tensor `{name}`: {reason}")]
    Scale { path: PathBuf, name: String, reason: String },
    #[error("no model.safetensors or model.safetensors.index.json in {0}")]
    NotFound(PathBuf),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

fn to_f32(path: &Path, name: &str, t: &TensorView<'_>) -> Result<Vec<f32>, CheckpointError> {
    let b = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F8_E4M3 => b.iter().map(|&x| crate::numerics::e4m3_to_f32(x)).collect(),
        dtype => return Err(CheckpointError::Dtype { path: path.into(), name: name.into(), dtype }),
    })
}

/// Reads every tensor of one safetensors file; FP8 weights are dequantized with their
/// `_scale_inv` blocks and the scales themselves dropped.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let mut out = BTreeMap::new();
    let fp8 = read_raw(path, &mut out)?;
    dequantize(&mut out, fp8.into_iter().map(|n| (n, path.to_path_buf())))?;
    Ok(out)
}

/// Reads every tensor of one file into `out` as stored (FP8 values not yet scaled); returns the
/// names of the FP8 tensors.
fn read_raw(path: &Path, out: &mut BTreeMap<String, Tensor>) -> Result<Vec<String>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Format { path: path.into(), reason: e.to_string() })?;
    let mut fp8 = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() == Dtype::F8_E4M3 {
            fp8.push(name.clone());
        }
        out.insert(name.clone(), Tensor { shape: view.shape().to_vec(), data: to_f32(path, &name, &view)? });
    }
    Ok(fp8)
}

/// Scales each FP8 tensor (named with the file it came from) by its `_scale_inv` blocks, which
/// may sit in another shard, and drops the scales.
fn dequantize(
    tensors: &mut BTreeMap<String, Tensor>,
    fp8: impl Iterator<Item = (String, PathBuf)>,
) -> Result<(), CheckpointError> {
    for (name, path) in fp8 {
        let scale_name = format!("{name}_scale_inv");
        let scale = tensors
            .remove(&scale_name)
            .ok_or_else(|| CheckpointError::MissingScale { path: path.clone(), name: name.clone() })?;
        if let Some(w) = tensors.get_mut(&name) {
            dequantize_blocks(w, &scale).map_err(|reason| CheckpointError::Scale {
                path,
                name: name.clone(),
                reason,
            })?;
        }
    }
    Ok(())
}

/// `w[r, c] *= scale[r/128, c/128]` (DeepSeek-V3's 128×128 weight blocks; the last block of a
/// row or column may be partial). The scale must have one entry per block.
fn dequantize_blocks(w: &mut Tensor, scale: &Tensor) -> Result<(), String> {
    let [rows, cols] = w.shape[..] else {
        return Err(format!("an FP8 weight must be a matrix, this one has shape {:?}", w.shape));
    };
    let (srows, scols) = (rows.div_ceil(128), cols.div_ceil(128));
    if scale.data.len() != srows * scols {
        return Err(format!(
            "its scale has shape {:?}; 128x128 blocks of a {rows}x{cols} weight need [{srows}, {scols}]",
            scale.shape
        ));
    }
    for r in 0..rows {
        for c in 0..cols {
            w.data[r * cols + c] *= scale.data[(r / 128) * scols + c / 128];
        }
    }
    Ok(())
}

/// Reads a checkpoint folder: `model.safetensors`, or the shards a `model.safetensors.index.json`
/// names.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return read_file(&single);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Err(CheckpointError::NotFound(dir.into()));
    }
    let text = std::fs::read_to_string(&index).map_err(|source| CheckpointError::Io { path: index.clone(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::Format { path: index.clone(), reason: e.to_string() })?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| CheckpointError::Format { path: index.clone(), reason: "no weight_map object".into() })?;
    let mut shards: Vec<&str> = map.values().filter_map(|s| s.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    let mut out = BTreeMap::new();
    let mut fp8 = Vec::new();
    for shard in shards {
        let path = dir.join(shard);
        fp8.extend(read_raw(&path, &mut out)?.into_iter().map(|n| (n, path.clone())));
    }
    dequantize(&mut out, fp8.into_iter())?;
    Ok(out)
}

/// Writes f32 tensors `(name, shape, data)` as one safetensors file.
pub fn write_file(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), CheckpointError> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| CheckpointError::Write { path: path.into(), reason: e.to_string() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| CheckpointError::Write { path: path.into(), reason: e.to_string() })
}

/// Why a checkpoint does not fit a Program.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the checkpoint has no tensor `{0}`")]
    Missing(String),
    #[error("tensor `{name}` has shape {found:?}, the model needs {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
}

/// A parameter's tensor: by its own name, or cut out of transformers 5's fused in-memory expert
/// tensors (`mlp.experts.gate_up_proj` `[E, 2I, d]`, `mlp.experts.down_proj` `[E, d, I]`).
fn find(tensors: &BTreeMap<String, Tensor>, name: &str) -> Option<Tensor> {
    if let Some(t) = tensors.get(name) {
        return Some(t.clone());
    }
    let (prefix, rest) = name.split_once(".mlp.experts.")?;
    let (e, proj) = rest.split_once('.')?;
    let e: usize = e.parse().ok()?;
    let (fused, half) = match proj {
        "gate_proj.weight" => ("gate_up_proj", Some(0)),
        "up_proj.weight" => ("gate_up_proj", Some(1)),
        "down_proj.weight" => ("down_proj", None),
        _ => return None,
    };
    let t = tensors.get(&format!("{prefix}.mlp.experts.{fused}"))?;
    let [n_e, rows, cols] = t.shape[..] else { return None };
    if e >= n_e {
        return None;
    }
    let block = &t.data[e * rows * cols..(e + 1) * rows * cols];
    Some(match half {
        None => Tensor { shape: vec![rows, cols], data: block.to_vec() },
        Some(h) => {
            let r = rows / 2;
            Tensor { shape: vec![r, cols], data: block[h * r * cols..(h + 1) * r * cols].to_vec() }
        }
    })
}

/// Copies every parameter of `p` from `tensors` into the parameter arena `params`.
/// Returns the names of checkpoint tensors the model did not use (MTP modules' duplicated
/// embedding and head are expected there and not reported).
pub fn load_params(
    p: &crate::Program,
    tensors: &BTreeMap<String, Tensor>,
    params: &mut [f32],
) -> Result<Vec<String>, LoadError> {
    for prm in &p.params {
        let t = find(tensors, &prm.name).ok_or_else(|| LoadError::Missing(prm.name.clone()))?;
        if t.shape != prm.shape {
            return Err(LoadError::Shape { name: prm.name.clone(), expected: prm.shape.clone(), found: t.shape });
        }
        params[prm.offset..prm.offset + prm.len()].copy_from_slice(&t.data);
    }
    let used: std::collections::HashSet<&str> = p.params.iter().map(|x| x.name.as_str()).collect();
    Ok(tensors
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .filter(|k| !k.ends_with(".embed_tokens.weight") && !k.ends_with(".shared_head.head.weight"))
        .filter(|k| !(k.contains(".mlp.experts.gate_up_proj") || k.contains(".mlp.experts.down_proj")))
        .filter(|k| {
            !(k == &"lm_head.weight"
                && p.param("lm_head.weight").is_none()
                && p.param("model.embed_tokens.weight").is_some())
        })
        .cloned()
        .collect())
}
