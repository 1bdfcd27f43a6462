//! `dsv3c sim run` (the PTX emulator) against the independent fixtures of tests/sim/: CUDA kernels
//! (tests/sim/kernels/*.cu) compiled by NVRTC, with expected outputs computed by NumPy and exact
//! arithmetic in tests/sim/make_fixtures.py, not by the emulator. Each case folder's case.json gives
//! the command line and, per output, the expected file, dtype and tolerance. The two `oob_*` cases
//! are deliberately out of bounds and must fail with a message naming the PTX line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/fixtures")
}

fn load(case: &str) -> (PathBuf, Value) {
    let dir = fixtures().join(case);
    let text = std::fs::read_to_string(dir.join("case.json")).unwrap_or_else(|e| panic!("{case}/case.json: {e}"));
    (dir, serde_json::from_str(&text).unwrap())
}

/// A fresh scratch folder for one run's outputs (removed when the case passes).
fn scratch(case: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("dsv3c-sim-{case}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("case.json: {key} is not a string")).to_string()
}

/// The `dsv3c sim run` arguments of a case: inputs from the case folder, outputs into `out`.
fn command_line(dir: &Path, spec: &Value, out: &Path) -> Vec<String> {
    let path = |base: &Path, p: &str| base.join(p).to_str().unwrap().to_string();
    let mut args = vec!["sim".to_string(), "run".to_string(), path(dir, &text(spec, "ptx"))];
    for key in ["entry", "grid", "block"] {
        args.push(format!("--{key}"));
        args.push(text(spec, key));
    }
    let smem = spec["smem"].as_u64().unwrap_or(0);
    if smem > 0 {
        args.push("--smem".to_string());
        args.push(smem.to_string());
    }
    for arg in spec["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap();
        let parts: Vec<&str> = arg.splitn(3, ':').collect();
        let mapped = match parts[0] {
            "in" => format!("in:{}", path(dir, parts[1])),
            "out" => format!("out:{}:{}", parts[1], path(out, parts[2])),
            "inout" => format!("inout:{}:{}", path(dir, parts[1]), path(out, parts[2])),
            _ => arg.to_string(),
        };
        args.push("--arg".to_string());
        args.push(mapped);
    }
    args
}

/// One `dsv3c sim run` of a case: its folder, case.json, scratch folder, command line and result.
struct Run {
    dir: PathBuf,
    spec: Value,
    out: PathBuf,
    args: Vec<String>,
    output: Output,
}

fn run(case: &str) -> Run {
    let (dir, spec) = load(case);
    let out = scratch(case);
    let args = command_line(&dir, &spec, &out);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = common::dsv3c(&refs);
    Run { dir, spec, out, args, output }
}

fn shown(o: &Output) -> String {
    format!("--- stdout\n{}--- stderr\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dtype {
    F32,
    F64,
    F16,
    Bf16,
    E4m3,
    U8,
    U16,
    U32,
    S32,
    S64,
}

impl Dtype {
    fn parse(s: &str) -> Dtype {
        match s {
            "f32" => Dtype::F32,
            "f64" => Dtype::F64,
            "f16" => Dtype::F16,
            "bf16" => Dtype::Bf16,
            "e4m3" => Dtype::E4m3,
            "u8" => Dtype::U8,
            "u16" => Dtype::U16,
            "u32" => Dtype::U32,
            "s32" => Dtype::S32,
            "s64" => Dtype::S64,
            _ => panic!("unknown dtype {s}"),
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::E4m3 | Dtype::U8 => 1,
            Dtype::F16 | Dtype::Bf16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::U32 | Dtype::S32 => 4,
            Dtype::F64 | Dtype::S64 => 8,
        }
    }

    /// (significand bits including the implicit one, minimum normal exponent) of a float format.
    fn precision(self) -> Option<(i32, i32)> {
        match self {
            Dtype::F32 => Some((24, -126)),
            Dtype::F64 => Some((53, -1022)),
            Dtype::F16 => Some((11, -14)),
            Dtype::Bf16 => Some((8, -126)),
            Dtype::E4m3 => Some((4, -6)),
            _ => None,
        }
    }

    /// The value of one element's bits (NaN for any NaN of the format).
    fn value(self, bits: u64) -> f64 {
        match self {
            Dtype::F32 => f32::from_bits(bits as u32) as f64,
            Dtype::F64 => f64::from_bits(bits),
            Dtype::Bf16 => f32::from_bits((bits as u32) << 16) as f64,
            Dtype::F16 => {
                let (e, m) = (((bits >> 10) & 31) as i32, (bits & 1023) as f64);
                let sign = if bits >> 15 & 1 == 1 { -1.0 } else { 1.0 };
                sign * match e {
                    31 if m != 0.0 => f64::NAN,
                    31 => f64::INFINITY,
                    0 => m * 2f64.powi(-24),
                    _ => (1.0 + m / 1024.0) * 2f64.powi(e - 15),
                }
            }
            Dtype::E4m3 => {
                let (e, m) = (((bits >> 3) & 15) as i32, (bits & 7) as f64);
                let sign = if bits >> 7 & 1 == 1 { -1.0 } else { 1.0 };
                sign * match e {
                    15 if m == 7.0 => f64::NAN,
                    0 => m * 2f64.powi(-9),
                    _ => (1.0 + m / 8.0) * 2f64.powi(e - 7),
                }
            }
            Dtype::U8 | Dtype::U16 | Dtype::U32 => bits as f64,
            Dtype::S32 => bits as u32 as i32 as f64,
            Dtype::S64 => bits as i64 as f64,
        }
    }

    fn elements(self, bytes: &[u8]) -> Vec<u64> {
        bytes
            .chunks_exact(self.size())
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect()
    }
}

/// One unit in the last place of a value of magnitude `a` in a float format.
fn ulp(a: f64, (p, emin): (i32, i32)) -> f64 {
    if a < 2f64.powi(emin) {
        return 2f64.powi(emin - p + 1);
    }
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(e - p + 1)
}

struct Tolerance {
    abs: f64,
    rel: f64,
    ulp: f64,
}

fn describe(dtype: Dtype, bits: u64) -> String {
    match dtype {
        Dtype::S32 => format!("{}", bits as u32 as i32),
        Dtype::S64 => format!("{}", bits as i64),
        Dtype::U8 | Dtype::U16 | Dtype::U32 => format!("{bits} (0x{bits:x})"),
        _ => format!("{:e} (0x{bits:0w$x})", dtype.value(bits), w = dtype.size() * 2),
    }
}

/// Compares one output with its expected file; `Err` says how many elements are off and the worst.
fn compare(case: &str, dir: &Path, out: &Path, cmp: &Value) -> Result<(), String> {
    let name = text(cmp, "output");
    let dtype = Dtype::parse(&text(cmp, "dtype"));
    let edtype = cmp.get("expected_dtype").and_then(Value::as_str).map_or(dtype, Dtype::parse);
    let got_bytes = std::fs::read(out.join(&name)).map_err(|e| format!("{case}/{name}: not written ({e})"))?;
    let exp_bytes = std::fs::read(dir.join(text(cmp, "expected"))).unwrap();
    let got = dtype.elements(&got_bytes);
    let exp = edtype.elements(&exp_bytes);
    if got_bytes.len() != exp.len() * dtype.size() {
        return Err(format!("{case}/{name}: {} bytes, expected {}", got_bytes.len(), exp.len() * dtype.size()));
    }
    let why = cmp["why"].as_str().unwrap_or("");
    let exact = cmp["tolerance"].as_str() == Some("exact");
    let tol = if exact {
        assert_eq!(dtype, edtype, "{case}/{name}: an exact comparison needs the same dtype");
        Tolerance { abs: 0.0, rel: 0.0, ulp: 0.0 }
    } else {
        let t = &cmp["tolerance"];
        let f = |k: &str| t.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Tolerance { abs: f("abs"), rel: f("rel"), ulp: f("ulp") }
    };
    let mut bad = 0usize;
    // (index, badness, allowed error, actual error)
    let mut worst: Option<(usize, f64, f64, f64)> = None;
    for (i, (&g, &e)) in got.iter().zip(&exp).enumerate() {
        let (gv, ev) = (dtype.value(g), edtype.value(e));
        let (ok, err, allowed) = if exact {
            let same = g == e || (dtype.precision().is_some() && gv.is_nan() && ev.is_nan());
            // a mismatch always counts: NaN against a number is infinitely off, +0 against -0 minimally
            let err = if same {
                0.0
            } else if gv.is_nan() || ev.is_nan() {
                f64::INFINITY
            } else {
                (gv - ev).abs().max(f64::MIN_POSITIVE)
            };
            (same, err, 0.0)
        } else if ev.is_nan() || ev.is_infinite() {
            let same = (ev.is_nan() && gv.is_nan()) || gv == ev;
            (same, if same { 0.0 } else { f64::INFINITY }, 0.0)
        } else {
            let err = (gv - ev).abs();
            let ulps = dtype.precision().map_or(0.0, |p| tol.ulp * ulp(gv.abs().max(ev.abs()), p));
            let allowed = tol.abs + tol.rel * ev.abs() + ulps;
            (gv.is_finite() && err <= allowed, if gv.is_nan() { f64::INFINITY } else { err }, allowed)
        };
        if !ok {
            bad += 1;
            let badness = if allowed > 0.0 { err / allowed } else { err };
            if worst.is_none_or(|w| badness > w.1) {
                worst = Some((i, badness, allowed, err));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _, allowed, err)) => Err(format!(
            "{case}/{name}: {bad} of {} elements off; worst [{i}]: got {}, expected {}, |error| {err:e} > allowed \
             {allowed:e}\n  tolerance: {} ({why})",
            exp.len(),
            describe(dtype, got[i]),
            describe(edtype, exp[i]),
            cmp["tolerance"]
        )),
    }
}

/// Runs a case that must succeed and compares every output.
fn check_case(case: &str) {
    let Run { dir, spec, out, args, output: o } = run(case);
    assert!(!spec["expect_failure"].as_bool().unwrap(), "{case} is an expect_failure case");
    assert!(o.status.success(), "dsv3c {} failed ({}):\n{}", args.join(" "), o.status, shown(&o));
    let failures: Vec<String> =
        spec["outputs"].as_array().unwrap().iter().filter_map(|c| compare(case, &dir, &out, c).err()).collect();
    assert!(
        failures.is_empty(),
        "dsv3c {}\n{}\n(outputs kept in {})",
        args.join(" "),
        failures.join("\n"),
        out.display()
    );
    std::fs::remove_dir_all(&out).ok();
}

/// Runs a case that must fail; returns its stdout and stderr together, and the faulting PTX line.
fn failing_case(case: &str) -> (String, u64) {
    let Run { spec, out, args, output: o, .. } = run(case);
    assert!(spec["expect_failure"].as_bool().unwrap(), "{case} is not an expect_failure case");
    let message = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&out).ok();
    assert!(
        !o.status.success(),
        "dsv3c {} succeeded on a kernel that goes out of bounds:\n{}",
        args.join(" "),
        shown(&o)
    );
    assert!(!message.contains("panicked at"), "dsv3c {} panicked instead of reporting:\n{}", args.join(" "), shown(&o));
    (message, spec["faulting_ptx_line"].as_u64().unwrap())
}

/// The line numbers N of every "line N" in a message, case-insensitively (the regex `(?i)line \d+`).
fn mentioned_lines(message: &str) -> Vec<u64> {
    let lower = message.to_lowercase();
    lower
        .match_indices("line ")
        .filter_map(|(i, m)| {
            let digits: String = lower[i + m.len()..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

macro_rules! sim_cases {
    ($($case:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($case)),*];
        $(
            #[test]
            fn $case() {
                check_case(stringify!($case));
            }
        )*
    };
}

sim_cases!(
    saxpy,
    int_ops,
    transcendental,
    f64_ops,
    warp_reduce,
    block_reduce,
    matmul_tiled,
    transpose,
    thread_ids,
    mma_bf16_tile,
    mma_bf16_gemm,
    mma_bf16_exact,
    mma_e4m3_exact,
    mma_e4m3_gemm,
    cvt_pack,
);

const FAILING: &[&str] = &["oob_store", "oob_load"];

#[test]
fn every_fixture_folder_has_a_test() {
    let mut folders: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("case.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut named: Vec<String> = CASES.iter().chain(FAILING).map(|s| s.to_string()).collect();
    named.sort();
    assert_eq!(folders, named, "tests/sim/fixtures and the cases named in tests/sim.rs differ");
}

#[test]
fn out_of_bounds_store_fails_with_a_ptx_line() {
    let (message, _) = failing_case("oob_store");
    assert!(!mentioned_lines(&message).is_empty(), "no `line N` in the report:\n{message}");
}

#[test]
fn out_of_bounds_store_names_the_faulting_line() {
    let (message, line) = failing_case("oob_store");
    assert!(mentioned_lines(&message).contains(&line), "the st.global is on line {line}; the report says:\n{message}");
}

#[test]
fn out_of_bounds_load_fails_with_a_ptx_line() {
    let (message, _) = failing_case("oob_load");
    assert!(!mentioned_lines(&message).is_empty(), "no `line N` in the report:\n{message}");
}

#[test]
fn out_of_bounds_load_names_the_faulting_line() {
    let (message, line) = failing_case("oob_load");
    assert!(mentioned_lines(&message).contains(&line), "the ld.global is on line {line}; the report says:\n{message}");
}

#[test]
fn line_mentions_are_found_like_the_regex() {
    assert_eq!(mentioned_lines("error: out of bounds at LINE 39: st.global.f32"), vec![39]);
    assert_eq!(mentioned_lines("kernel.ptx line 7, line x, Line 120"), vec![7, 120]);
    assert!(mentioned_lines("line: 3, no number after `line `").is_empty());
}
