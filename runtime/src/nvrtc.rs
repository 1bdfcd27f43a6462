//! NVRTC through cudarc, loaded at run time: CUDA C++ source in, PTX (for the emulator, or any driver
//! new enough to JIT it) or a cubin (SASS for one real architecture, which a driver older than this
//! NVRTC still loads) out. Finds libnvrtc on the loader's
//! path, or under `DSV3C_NVRTC`, `CUDA_PATH`/`CUDA_HOME`, `/usr/local/cuda`, or the `nvidia-cuda-nvrtc-cu12`
//! wheel of the active Python environment; its absence is a typed error, never a panic. Headers come from
//! `CUDA_INCLUDE_PATH` (or the usual CUDA locations) when present; dsv3c's own kernels need none.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why a source did not become PTX.
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error(
        "libnvrtc not found (looked on the loader path and in: {searched}); install CUDA, or \
         `pip install nvidia-cuda-nvrtc-cu12` and set DSV3C_NVRTC to its lib folder"
    )]
    Missing { searched: String },
    #[error("NVRTC rejected {name} (options {options:?}):\n{log}")]
    Compile { name: String, options: Vec<String>, log: String },
    #[error("NVRTC failed on {name}: {why}")]
    Other { name: String, why: String },
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("DSV3C_NVRTC") {
        let p = PathBuf::from(p);
        dirs.push(if p.is_file() { p.parent().map(Path::to_path_buf).unwrap_or_default() } else { p });
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(p) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&p).join("lib64"));
            dirs.push(PathBuf::from(p).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        if let Ok(rd) = std::fs::read_dir(PathBuf::from(venv).join("lib")) {
            for e in rd.flatten() {
                dirs.push(e.path().join("site-packages/nvidia/cuda_nvrtc/lib"));
            }
        }
    }
    dirs
}

/// Makes libnvrtc loadable: already on the loader path, or preloaded from a known folder (once loaded,
/// its soname satisfies cudarc's own lookup).
pub fn ensure_loaded() -> Result<(), NvrtcError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: probing only dlopens the library (its initializers are NVIDIA's).
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Ok(());
            }
            let dirs = candidate_dirs();
            for d in &dirs {
                for name in ["libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.13"] {
                    let path = d.join(name);
                    if !path.is_file() {
                        continue;
                    }
                    // SAFETY: as above. The library stays loaded for the life of the process.
                    if let Ok(lib) = unsafe { libloading::Library::new(&path) } {
                        std::mem::forget(lib);
                        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                            return Ok(());
                        }
                    }
                }
            }
            Err(dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))
        })
        .clone()
        .map_err(|searched| NvrtcError::Missing { searched })
}

/// Header folders: `CUDA_INCLUDE_PATH` (colon-separated), else `CUDA_PATH`/`CUDA_HOME` and
/// `/usr/local/cuda`, whichever exist.
pub fn include_paths() -> Vec<String> {
    let mut dirs: Vec<PathBuf> = match std::env::var_os("CUDA_INCLUDE_PATH") {
        Some(v) => std::env::split_paths(&v).collect(),
        None => ["CUDA_PATH", "CUDA_HOME"]
            .iter()
            .filter_map(|var| std::env::var_os(var).map(|p| PathBuf::from(p).join("include")))
            .chain([PathBuf::from("/usr/local/cuda/include")])
            .collect(),
    };
    dirs.retain(|p| p.is_dir());
    dirs.iter().map(|p| p.display().to_string()).collect()
}

/// The NVRTC version, `(major, minor)`.
pub fn version() -> Result<(i32, i32), NvrtcError> {
    ensure_loaded()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded; the pointers are valid for the call.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Other { name: "nvrtcVersion".into(), why: format!("{r:?}") });
    }
    Ok((major, minor))
}

/// NVRTC's options for `arch`: the architecture, C++17, and the header folders.
fn options(arch: &str) -> Vec<String> {
    let mut options = vec![format!("--gpu-architecture={arch}"), "-std=c++17".to_string()];
    options.extend(include_paths().into_iter().map(|p| format!("--include-path={p}")));
    options
}

/// Compiles `source` (named `name` in messages) for `arch` (`sm_90a`, ...) to PTX text.
pub fn compile(name: &str, source: &str, arch: &str) -> Result<String, NvrtcError> {
    ensure_loaded()?;
    let options = options(arch);
    let opts =
        cudarc::nvrtc::CompileOptions { options: options.clone(), name: Some(name.into()), ..Default::default() };
    if source.contains('\0') {
        return Err(NvrtcError::Other { name: name.into(), why: "source contains a NUL byte".into() });
    }
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            Err(NvrtcError::Compile { name: name.into(), options, log: log.to_string_lossy().into_owned() })
        }
        Err(e) => Err(NvrtcError::Other { name: name.into(), why: format!("{e:?}") }),
    }
}

/// Compiles `source` for the real architecture `arch` (`sm_90a`) to a cubin: an ELF of SASS that the
/// driver loads as it is. PTX is JIT-compiled by the driver, which refuses PTX from an NVRTC newer than
/// itself (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`); a cubin of the same major version loads.
pub fn compile_cubin(name: &str, source: &str, arch: &str) -> Result<Vec<u8>, NvrtcError> {
    use cudarc::nvrtc::{result, sys};
    ensure_loaded()?;
    let other = |why: String| NvrtcError::Other { name: name.into(), why };
    let src = std::ffi::CString::new(source).map_err(|_| other("source contains a NUL byte".into()))?;
    let cname = std::ffi::CString::new(name).map_err(|_| other("name contains a NUL byte".into()))?;
    let options = options(arch);
    if options.iter().any(|o| o.contains('\0')) {
        return Err(other("an include path contains a NUL byte".into()));
    }
    let prog = result::create_program(&src, Some(&cname)).map_err(|e| other(format!("{e:?}")))?;
    // SAFETY: `prog` was created just above from `src` and `cname`, which outlive it; it is used only
    // here and destroyed exactly once, after the last use, on every path. The options hold no NUL
    // (checked), so cudarc's CString conversion cannot fail. The size NVRTC reports is the cubin's
    // length, and `buf` holds that many bytes for nvrtcGetCUBIN to fill.
    let out = unsafe {
        let built = match result::compile_program(prog, &options) {
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| other(format!("nvrtcGetCUBINSize: {e:?}")))
                    .and_then(|()| {
                        let mut buf = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char)
                            .result()
                            .map(|()| buf)
                            .map_err(|e| other(format!("nvrtcGetCUBIN: {e:?}")))
                    })
            }
            Err(_) => {
                let log = result::get_program_log(prog).unwrap_or_default();
                let log: Vec<u8> = log.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
                Err(NvrtcError::Compile {
                    name: name.into(),
                    options: options.clone(),
                    log: String::from_utf8_lossy(&log).into_owned(),
                })
            }
        };
        let _ = result::destroy_program(prog);
        built
    };
    out
}
