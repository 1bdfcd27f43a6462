//! `dsv3c inspect SPEC [--json] [--gpus N --gpu-memory GB --parallel tp=..,pp=..,ep=..,dp=..]`

use std::path::PathBuf;
use std::process::ExitCode;

use dsv3c_spec::inspect::{inspect, MemoryRequest};
use dsv3c_spec::memory::Layout;
use miette::{miette, Result};

use super::{load_spec, RunFlags};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model spec (YAML).
    pub spec: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Training sequence length for FLOPs, KV cache and activations [default: min(4096, max_seq_len)].
    #[arg(long)]
    pub seq_len: Option<u64>,
    /// GPUs of the parallel layout; with --gpu-memory, adds memory per GPU.
    #[arg(long, requires = "gpu_memory")]
    pub gpus: Option<u64>,
    /// Memory of one GPU in GB (1e9 bytes), e.g. 80 for an H100.
    #[arg(long, requires = "gpus")]
    pub gpu_memory: Option<f64>,
    /// Parallel layout, e.g. tp=8,pp=4,ep=8,dp=2 (missing degrees are 1; dp takes the GPUs left).
    #[arg(long, requires = "gpus", default_value = "")]
    pub parallel: String,
    #[command(flatten)]
    pub run: RunFlags,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let seq_len = a.seq_len.unwrap_or(spec.max_seq_len.min(4096));
    if seq_len == 0 {
        return Err(miette!("--seq-len must be at least 1"));
    }
    let mem = match (a.gpus, a.gpu_memory) {
        (Some(gpus), Some(gb)) => {
            if !(gb.is_finite() && gb > 0.0) {
                return Err(miette!("--gpu-memory must be a positive number of GB, got {gb}"));
            }
            let layout = Layout::parse(&a.parallel, Some(gpus)).map_err(|e| miette!("--parallel: {e}"))?;
            layout
                .check(&spec, gpus)
                .map_err(|e| miette!(help = "try `dsv3c select` for a layout that fits", "--parallel {layout}: {e}"))?;
            Some(MemoryRequest { layout, run: a.run.shape(seq_len), gpu_memory_gb: gb })
        }
        _ => None,
    };
    let report = inspect(&spec, seq_len, mem);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| miette!("{e}"))?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
