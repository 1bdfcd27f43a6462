//! The fuzzing harness: inputs made by editing valid files (bit flips, truncations, splices, a
//! token swapped for a hostile value) or generated from a format's own fields, each run in its
//! own thread with a time limit, its allocations counted, its panics caught; and the table of
//! what was tried.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

// ---------------------------------------------------------------------------------------------
// Allocation counting
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting — on threads that ask for it — the largest single request, and
/// refusing (which aborts the test binary, loudly) any one request
/// over [`REFUSE`]: a parser that trusts a length in its input asks for that length at once.
pub struct Counting;

/// Requests above this abort the run: no parser input of this suite is over a few MiB.
const REFUSE: usize = 1 << 32;

#[derive(Clone, Copy)]
struct Tally {
    on: bool,
    largest: usize,
}

thread_local! {
    // A const-initialized Cell of a Copy type: no lazy initialization and no destructor, so the
    // allocator may touch it without allocating or re-entering itself.
    static TALLY: Cell<Tally> = const { Cell::new(Tally { on: false, largest: 0 }) };
}

fn note(size: usize) -> bool {
    TALLY
        .try_with(|t| {
            let mut x = t.get();
            if x.on {
                x.largest = x.largest.max(size);
                t.set(x);
                if size > REFUSE {
                    // Unbuffered and without formatting: nothing here may allocate.
                    let _ =
                        std::io::stderr().write_all(b"fuzz: a parser asked for more than 4 GiB in one allocation\n");
                    return false;
                }
            }
            true
        })
        .unwrap_or(true)
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees hold for every caller; `note` neither allocates nor unwinds (it touches a
// const-initialized thread-local Cell and writes a static byte string to unbuffered stderr), and
// a refused request returns null, which `GlobalAlloc` permits.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` through this allocator with `layout`; the caller
        // upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

// ---------------------------------------------------------------------------------------------
// One probe: a parser on one input
// ---------------------------------------------------------------------------------------------

/// What one input did.
pub struct Probe {
    /// `Ok(())` accepted, `Err(message)` rejected; `None` when it panicked or hung.
    pub result: Option<Result<(), String>>,
    pub panic: Option<String>,
    pub elapsed: Duration,
    pub largest: usize,
}

/// How long one input may take (a debug build on a loaded two-core machine; the slowest
/// input seen takes a small fraction of it).
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread, counting its allocations; a panic is caught, and an input still
/// running after [`LIMIT`] is reported as a hang (its thread is left behind).
pub fn probe<F: FnOnce() -> Result<(), String> + Send + 'static>(f: F) -> Probe {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        TALLY.with(|t| t.set(Tally { on: true, largest: 0 }));
        let start = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let elapsed = start.elapsed();
        let tally = TALLY.with(|t| {
            let x = t.get();
            t.set(Tally { on: false, ..x });
            x
        });
        let panic = r.as_ref().err().map(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into())
        });
        let _ = tx.send(Probe { result: r.ok(), panic, elapsed, largest: tally.largest });
    });
    rx.recv_timeout(LIMIT).unwrap_or(Probe {
        result: None,
        panic: Some(format!("no answer after {LIMIT:?} (a hang)")),
        elapsed: LIMIT,
        largest: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// Values that break parsers: limits of every integer type, non-finite floats in both YAML's
/// and JSON's spellings, YAML anchors and tags, empty and deep containers, invalid UTF-8.
pub const HOSTILE: &[&[u8]] = &[
    b"-1",
    b"0",
    b"1",
    b"3",
    b"127",
    b"128",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e308",
    b"-1e308",
    b"1e-320",
    b"0.5",
    b"NaN",
    b".nan",
    b".inf",
    b"-.inf",
    b"inf",
    b"null",
    b"~",
    b"true",
    b"\"\"",
    b"[]",
    b"{}",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"&a [1, 2]",
    b"*a",
    b"!!binary aGVsbG8=",
    b"!!python/object:os.system",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xff\xfe\xfd",
    b"\xe2\x80\xae",
    b"\t",
    b"\r\n",
    b"'",
    b"\"",
    b"F8_E4M3",
    b"I64",
    b"BOOL",
    b"data_offsets",
];

/// One edit of an input.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    /// Copy `len` bytes from one place to another (duplicated keys, repeated blocks).
    Splice(Index, Index, usize),
    /// Replace the word (a run of letters, digits and `_.+-`) at a place by a hostile value.
    Word(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, b)| Edit::Flip(i, 1 << b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), any::<Index>(), 1..256usize).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
        (any::<Index>(), 0..HOSTILE.len()).prop_map(|(i, k)| Edit::Word(i, k)),
        (any::<Index>(), 0..HOSTILE.len()).prop_map(|(i, k)| Edit::Word(i, k)),
        (any::<Index>(), 0..HOSTILE.len()).prop_map(|(i, k)| Edit::Word(i, k)),
    ]
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.+-".contains(&b)
}

/// Applies `edits` to `bytes`.
pub fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        let at = |i: &Index| if n == 0 { 0 } else { i.index(n) };
        match e {
            Edit::Flip(i, bit) if n > 0 => bytes[at(i)] ^= bit,
            Edit::Set(i, b) if n > 0 => bytes[at(i)] = *b,
            Edit::Truncate(i) => bytes.truncate(at(i)),
            Edit::Delete(i, len) => {
                let a = at(i);
                bytes.drain(a..(a + len).min(n));
            }
            Edit::Insert(i, b) => {
                let a = at(i);
                bytes.splice(a..a, b.iter().copied());
            }
            Edit::Splice(from, to, len) if n > 0 => {
                let a = at(from);
                let chunk = bytes[a..(a + len).min(n)].to_vec();
                let b = at(to);
                bytes.splice(b..b, chunk);
            }
            Edit::Word(i, k) => {
                // The word at or after the place (wrapping round), else the place itself.
                let a = at(i);
                let a = (0..n).map(|d| (a + d) % n).find(|&j| is_word(bytes[j])).unwrap_or(a);
                let (mut lo, mut hi) = (a, a);
                while lo > 0 && is_word(bytes[lo - 1]) {
                    lo -= 1;
                }
                while hi < n && is_word(bytes[hi]) {
                    hi += 1;
                }
                bytes.splice(lo..hi, HOSTILE[*k].iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

/// Values a field may be given in place of its own.
fn hostile_yaml(k: usize) -> serde_yaml::Value {
    use serde_yaml::Value as V;
    match k {
        0 => V::from(-1),
        1 => V::from(0),
        2 => V::from(1),
        3 => V::from(2),
        4 => V::from(3),
        5 => V::from(i64::MAX),
        6 => V::from(u64::MAX),
        7 => V::from(1u64 << 32),
        8 => V::from(1e308),
        9 => V::from(f64::NAN),
        10 => V::from(f64::INFINITY),
        11 => V::from(f64::NEG_INFINITY),
        12 => V::from(0.5),
        13 => V::from(-0.5),
        14 => V::from(""),
        15 => V::from("x".repeat(1000)),
        16 => V::Null,
        17 => V::from(true),
        18 => V::Sequence(vec![]),
        19 => V::Mapping(Default::default()),
        20 => V::Sequence((0..1000).map(V::from).collect()),
        _ => V::from(65537),
    }
}

const HOSTILE_VALUES: usize = 22;

/// Every node of `v` (pre-order), as a path of mapping keys and sequence indices.
fn yaml_paths(v: &serde_yaml::Value, at: &mut Vec<serde_yaml::Value>, out: &mut Vec<Vec<serde_yaml::Value>>) {
    out.push(at.clone());
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, x) in m {
                at.push(k.clone());
                yaml_paths(x, at, out);
                at.pop();
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for (i, x) in s.iter().enumerate() {
                at.push(serde_yaml::Value::from(i));
                yaml_paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn yaml_at<'a>(v: &'a mut serde_yaml::Value, path: &[serde_yaml::Value]) -> Option<&'a mut serde_yaml::Value> {
    let mut v = v;
    for k in path {
        v = match v {
            serde_yaml::Value::Mapping(m) => m.get_mut(k)?,
            serde_yaml::Value::Sequence(s) => s.get_mut(k.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(v)
}

/// One change of a YAML or JSON document's values: a node replaced by a hostile value, or a
/// mapping entry removed.
#[derive(Debug, Clone)]
pub enum ValueEdit {
    Replace(Index, usize),
    Remove(Index),
}

/// Documents made from the YAML and JSON (by file name) `seeds` by changing values, so that the
/// text stays well-formed and every value reaches the checks behind the syntax.
pub fn value_edits(seeds: Vec<(&'static str, Vec<u8>)>) -> Inputs {
    let e = prop_oneof![
        4 => (any::<Index>(), 0..HOSTILE_VALUES).prop_map(|(i, k)| ValueEdit::Replace(i, k)),
        1 => any::<Index>().prop_map(ValueEdit::Remove),
    ];
    (0..seeds.len(), proptest::collection::vec(e, 1..4))
        .prop_map(move |(s, edits)| {
            let (file, bytes) = &seeds[s];
            let mut v: serde_yaml::Value = serde_yaml::from_slice(bytes).unwrap();
            for e in &edits {
                let mut paths = Vec::new();
                yaml_paths(&v, &mut Vec::new(), &mut paths);
                match e {
                    ValueEdit::Replace(i, k) => {
                        let path = &paths[i.index(paths.len())];
                        if let Some(node) = yaml_at(&mut v, path) {
                            *node = hostile_yaml(*k);
                        }
                    }
                    ValueEdit::Remove(i) => {
                        let path = &paths[i.index(paths.len())];
                        if let Some((last, parent)) = path.split_last() {
                            if let Some(serde_yaml::Value::Mapping(m)) = yaml_at(&mut v, parent) {
                                m.remove(last);
                            }
                        }
                    }
                }
            }
            let text = if file.ends_with(".json") {
                // JSON has no NaN or infinity: serde_json writes them as null.
                serde_json::to_vec_pretty(&v).unwrap_or_default()
            } else {
                serde_yaml::to_string(&v).unwrap().into_bytes()
            };
            (*file, text)
        })
        .boxed()
}

/// Inputs of a target: the file the bytes go to, and the bytes.
pub type Inputs = BoxedStrategy<(&'static str, Vec<u8>)>;

/// A parser under test.
pub struct Target {
    /// The parser, as the table names it.
    pub name: &'static str,
    /// The library function that the CLI calls.
    pub entry: &'static str,
    /// Valid inputs to edit: (file the bytes go to, bytes).
    pub seeds: Vec<(&'static str, Vec<u8>)>,
    /// Inputs generated from the format's own fields (for binary formats), if any: (file, bytes).
    pub generated: Option<Inputs>,
    /// Hand-written hostile inputs: (what it is, file, bytes).
    pub hostile: Vec<(&'static str, &'static str, Vec<u8>)>,
    /// Writes the input's files into the (fresh) folder and runs the parser on them; `Err` is the
    /// error as the user would read it.
    pub run: fn(&Path, &str, &[u8]) -> Result<(), String>,
}

/// Cases per kind of input of each target (`DSV3C_FUZZ_CASES`, default 2000).
pub fn cases() -> u32 {
    std::env::var("DSV3C_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
}

static CASE: AtomicU64 = AtomicU64::new(0);

/// A fresh folder for one input.
fn case_dir() -> PathBuf {
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("dsv3c-fuzz-{}", std::process::id())).join(format!("case-{n}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The totals of one target.
#[derive(Default)]
struct Totals {
    cases: u64,
    accepted: u64,
    rejected: u64,
    slowest: Duration,
    largest: usize,
    /// The largest single allocation over the input's size (plus 1 KiB).
    ratio: f64,
    example: Option<String>,
}

/// Why one input failed the contract, if it did: a panic, a hang, an allocation out of
/// proportion to the input, or an error that does not name the file.
fn verdict(dir: &Path, file: &str, bytes: &[u8], p: &Probe, t: &mut Totals) -> Option<String> {
    t.cases += 1;
    t.slowest = t.slowest.max(p.elapsed);
    t.largest = t.largest.max(p.largest);
    let ratio = p.largest as f64 / (bytes.len() + 1024) as f64;
    t.ratio = t.ratio.max(ratio);
    if let Some(panic) = &p.panic {
        return Some(format!("panicked: {panic}"));
    }
    // The largest single allocation is bounded by the input: 256 bytes for each input byte
    // (libyaml keeps a ~120-byte event for each `- ` of a block sequence; an f32 for each FP8
    // value), plus 8 MiB for fixed tables.
    if p.largest > 256 * bytes.len() + (8 << 20) {
        return Some(format!("allocated {} bytes at once for a {}-byte input", p.largest, bytes.len()));
    }
    match p.result.as_ref()? {
        Ok(()) => t.accepted += 1,
        Err(message) => {
            t.rejected += 1;
            let dir_s = dir.display().to_string();
            if !message.contains(&dir_s) {
                return Some(format!("the error does not name the file ({file} in {dir_s}): {message}"));
            }
            if message.trim().len() <= dir_s.len() + file.len() + 8 {
                return Some(format!("the error says nothing beyond the file: {message}"));
            }
            let shown = message.replace(&dir_s, "DIR");
            let shorter = t.example.as_ref().is_none_or(|e| shown.len() < e.len() && shown.len() > 40);
            if shorter {
                t.example = Some(shown);
            }
        }
    }
    None
}

/// Runs every kind of input of `t` through its parser and fails on the first broken contract
/// (after shrinking it, for the edited and generated inputs). Writes its row of the table when
/// `DSV3C_FUZZ_TABLE` names a folder.
pub fn fuzz(t: Target) {
    let totals = std::sync::Mutex::new(Totals::default());
    let run = t.run;
    let one = |file: &'static str, bytes: Vec<u8>| -> Option<String> {
        let dir = case_dir();
        let (d, b) = (dir.clone(), bytes.clone());
        let p = probe(move || run(&d, file, &b));
        let v = verdict(&dir, file, &bytes, &p, &mut totals.lock().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        v
    };
    for (what, file, bytes) in &t.hostile {
        if let Some(v) = one(file, bytes.clone()) {
            panic!("{}: hostile input `{what}` ({file}): {v}", t.name);
        }
    }
    let config = Config { cases: cases(), failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let seeds = t.seeds.clone();
    // Mostly one or two words swapped (the file stays well-formed, so the values reach the
    // checks behind the syntax), else up to five edits of any kind.
    let word = (any::<Index>(), 0..HOSTILE.len()).prop_map(|(i, k)| Edit::Word(i, k));
    let edits = prop_oneof![
        2 => proptest::collection::vec(word, 1..3),
        1 => proptest::collection::vec(edit(), 1..6),
    ];
    let edited = (0..seeds.len(), edits).prop_map(move |(s, edits)| (seeds[s].0, apply(seeds[s].1.clone(), &edits)));
    let strategies: Vec<(&str, Inputs)> =
        std::iter::once(("edited", edited.boxed())).chain(t.generated.clone().map(|g| ("generated", g))).collect();
    for (kind, s) in strategies {
        let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let result = runner.run(&s, |(file, bytes)| match one(file, bytes) {
            None => Ok(()),
            Some(v) => Err(TestCaseError::fail(v)),
        });
        if let Err(e) = result {
            panic!("{}: an {kind} input broke the contract: {e}", t.name);
        }
    }
    let t_ = totals.into_inner().unwrap();
    if let Ok(dir) = std::env::var("DSV3C_FUZZ_TABLE") {
        let row = format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | 0 | {:.0} | {:.1} | {} |\n",
            t.name,
            t.entry,
            t.seeds.len(),
            t.hostile.len(),
            t_.cases,
            t_.accepted,
            t_.rejected,
            t_.slowest.as_secs_f64() * 1e3,
            t_.ratio,
            t_.example.unwrap_or_default().replace('|', "\\|").replace('\n', " "),
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{}.row", t.name.replace(' ', "-"))), row).unwrap();
    }
}
