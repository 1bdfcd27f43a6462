//! Property tests of every parser of user input: spec YAML, run recipe, data recipe, Hugging Face
//! config.json, token JSON, token shards, safetensors checkpoints (single file and sharded
//! index), training checkpoints (manifest, run state, optimizer state), tokenizer.json. No input
//! may panic, hang or allocate out of proportion to its size, and every error names the file.
//!
//! Each parser gets the valid files it reads, edited (see `harness`), inputs generated from the
//! format's own fields where it is binary, and hand-written hostile inputs. `DSV3C_FUZZ_CASES`
//! sets the cases per kind (default 2000); `DSV3C_FUZZ_TABLE=DIR` writes each parser's row of
//! the table that `scripts/fuzz-table.sh` assembles into bench/results/.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use harness::{fuzz, Target};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn write(dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// YAML that expands exponentially through aliases ("a billion laughs").
fn yaml_bomb() -> Vec<u8> {
    let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (i, c) in "bcdefghijklmnopq".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        s.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    s.into_bytes()
}

/// Hostile inputs every text format gets.
fn hostile_text(file: &'static str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("empty file", file, Vec::new()),
        ("only a byte-order mark", file, b"\xef\xbb\xbf".to_vec()),
        ("invalid UTF-8", file, b"\xff\xfe\x00\x01garbage".to_vec()),
        ("alias bomb", file, yaml_bomb()),
        ("100k nested lists", file, "[".repeat(100_000).into_bytes()),
        ("100k nested maps", file, "{\"a\":".repeat(100_000).into_bytes()),
        ("100k nested block sequences", file, "- ".repeat(100_000).into_bytes()),
        (
            "3000 nested block maps",
            file,
            (0..3000).map(|i| format!("{}a:\n", " ".repeat(i))).collect::<String>().into_bytes(),
        ),
        ("a 4 MB string", file, format!("\"{}\"", "x".repeat(4 << 20)).into_bytes()),
        ("a number of 10k digits", file, "9".repeat(10_000).into_bytes()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Specs and recipes
// ---------------------------------------------------------------------------------------------

fn spec_seeds() -> Vec<(&'static str, Vec<u8>)> {
    ["tiny", "1b", "5b", "671b", "small-fp8", "swa-mla-small"]
        .iter()
        .map(|n| ("spec.yaml", read(&format!("spec/{n}.yaml"))))
        .collect()
}

/// `dsv3c inspect` on an accepted spec: parameters, FLOPs, KV cache and memory must compute.
fn inspect(spec: &dsv3c::spec::Spec) {
    let _ = dsv3c::spec::inspect::inspect(spec, spec.max_seq_len.min(1 << 20), None);
    let _ = dsv3c::spec::kv_cache::kv_cache(spec, spec.max_seq_len);
}

fn run_spec(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    let spec = dsv3c::spec::load(write(dir, file, bytes)).map_err(|e| e.to_string())?;
    inspect(&spec);
    Ok(())
}

#[test]
fn spec_yaml() {
    fuzz(Target {
        name: "spec YAML",
        entry: "dsv3c_spec::load",
        seeds: spec_seeds(),
        generated: Some(harness::value_edits(spec_seeds())),
        hostile: hostile_text("spec.yaml"),
        run: run_spec,
    });
}

fn recipe_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for rel in
        ["configs/tiny.yaml", "configs/671b.yaml", "configs/small-fp8.yaml", "tests/fixtures/configs/tiny-quick.yaml"]
    {
        let text = String::from_utf8(read(rel)).unwrap();
        let text: String = text
            .lines()
            .map(|l| if l.starts_with("spec:") { "spec: spec.yaml".to_string() } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n");
        out.push(("recipe.yaml", text.into_bytes()));
    }
    // The spec a recipe names is read too: edit it beside an unedited recipe.
    out.push(("spec.yaml", read("spec/tiny.yaml")));
    out
}

fn run_recipe(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    write(dir, "spec.yaml", &read("spec/tiny.yaml"));
    if file == "spec.yaml" {
        write(dir, "recipe.yaml", &recipe_seeds()[0].1);
    }
    write(dir, file, bytes);
    let r = dsv3c::spec::config::load_recipe(&dir.join("recipe.yaml")).map_err(|e| e.to_string())?;
    let _ = (r.config.tokens_per_step(), r.config.total_tokens());
    inspect(&r.spec);
    Ok(())
}

#[test]
fn run_recipe_yaml() {
    fuzz(Target {
        name: "run recipe",
        entry: "dsv3c_spec::config::load_recipe",
        seeds: recipe_seeds(),
        generated: Some(harness::value_edits(recipe_seeds())),
        hostile: hostile_text("recipe.yaml"),
        run: run_recipe,
    });
}

fn run_data_recipe(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    let cfg = dsv3c_data::config::PrepareConfig::load(&write(dir, file, bytes)).map_err(|e| e.to_string())?;
    // What `prepare` builds from the recipe before it reads a document.
    let (bands, rows) = dsv3c_data::minhash::optimal_bands(cfg.near_dedup.threshold, cfg.near_dedup.permutations);
    let _ = dsv3c_data::minhash::MinHasher::new(cfg.near_dedup.permutations, cfg.near_dedup.shingle_words, cfg.seed)
        .signature("one two three four five six seven");
    let _ = dsv3c_data::minhash::Lsh::new(bands, rows);
    let _: Vec<u8> = Vec::with_capacity(cfg.batch_documents);
    Ok(())
}

#[test]
fn data_recipe_yaml() {
    let default = serde_yaml::to_string(&dsv3c_data::config::PrepareConfig::default()).unwrap().into_bytes();
    let small = b"seed: 7\nshard_tokens: 1000\nnear_dedup:\n  threshold: 0.7\n  permutations: 64\nquality:\n  min_words: 5\nlanguage:\n  enabled: true\n  keep: [eng, deu]\n".to_vec();
    fuzz(Target {
        name: "data recipe",
        entry: "dsv3c_data::config::PrepareConfig::load",
        seeds: vec![("data.yaml", default.clone()), ("data.yaml", small.clone())],
        generated: Some(harness::value_edits(vec![("data.yaml", default), ("data.yaml", small)])),
        hostile: hostile_text("data.yaml"),
        run: run_data_recipe,
    });
}

// ---------------------------------------------------------------------------------------------
// Hugging Face config.json, token JSON
// ---------------------------------------------------------------------------------------------

fn run_hf_config(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    let path = write(dir, file, bytes);
    let spec = dsv3c::spec::hf::load(&path, "fuzz").map_err(|e| e.to_string())?;
    // `dsv3c import-hf` writes the spec as YAML and reads it back under every rule; `generate`
    // and `eval --hf` check the rules of the f32 spec they read the weights into.
    let yaml = spec.to_yaml();
    dsv3c::spec::parse(&path.display().to_string(), &yaml).map_err(|e| e.to_string())?;
    let spec = dsv3c::spec::hf::checked(&path, dsv3c::spec::Spec { precision: Default::default(), ..spec })
        .map_err(|e| e.to_string())?;
    inspect(&spec);
    Ok(())
}

#[test]
fn hf_config_json() {
    let mut seeds: Vec<(&'static str, Vec<u8>)> = ["deepseek-v3", "deepseek-v2", "deepseek-v2-lite"]
        .iter()
        .map(|n| ("config.json", read(&format!("tests/fixtures/hf/{n}/config.json"))))
        .collect();
    let tiny = dsv3c::spec::load(root().join("spec/tiny.yaml")).unwrap();
    seeds.push(("config.json", dsv3c::spec::hf::export_text(&tiny).unwrap().into_bytes()));
    fuzz(Target {
        name: "HF config.json",
        entry: "dsv3c_spec::hf::load",
        seeds: seeds.clone(),
        generated: Some(harness::value_edits(seeds)),
        hostile: hostile_text("config.json"),
        run: run_hf_config,
    });
}

fn run_token_json(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    dsv3c::runtime::data::token_json::read(&write(dir, file, bytes)).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn token_json() {
    let long: Vec<u32> = (0..2000).map(|i| (i * 7919) % 50257).collect();
    let seeds = vec![
        ("tokens.json", b"[[1, 2, 3], [4, 5, 6]]".to_vec()),
        ("tokens.json", serde_json::to_vec(&vec![long.clone(), long]).unwrap()),
    ];
    fuzz(Target {
        name: "tokens JSON",
        entry: "dsv3c_runtime::data::token_json::read",
        seeds: seeds.clone(),
        generated: Some(harness::value_edits(seeds)),
        hostile: hostile_text("tokens.json"),
        run: run_token_json,
    });
}

// ---------------------------------------------------------------------------------------------
// Token shards
// ---------------------------------------------------------------------------------------------

fn shard_bytes(tokens: &[u32]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("dsv3c-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}.bin", tokens.len()));
    dsv3c::runtime::data::shard::write(&p, tokens).unwrap();
    std::fs::read(&p).unwrap()
}

/// A shard header with any fields, and a payload of any length.
fn shard_header(version: u32, width: u32, count: u64, block: u32, check: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = b"DSV3CTOK".to_vec();
    for x in [version, width] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&check.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn run_shard(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    dsv3c::runtime::data::shard::read_within(&write(dir, file, bytes), 50257).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn token_shard() {
    let generated = (
        prop_oneof![Just(1u32), Just(2u32), any::<u32>()],
        prop_oneof![Just(2u32), Just(4u32), any::<u32>()],
        prop_oneof![0..64u64, any::<u64>(), Just(u64::MAX / 2)],
        prop_oneof![1..8u32, Just(0u32), any::<u32>()],
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(v, w, c, b, k, p)| ("train.bin", shard_header(v, w, c, b, k, &p)))
        .boxed();
    let many: Vec<u32> = (0..70_000u32).map(|i| i % 50_000).collect();
    fuzz(Target {
        name: "token shard",
        entry: "dsv3c_runtime::data::shard::read_within",
        seeds: vec![
            ("train.bin", shard_bytes(&[1, 2, 3, 50256])),
            ("train.bin", shard_bytes(&[70_000, 3])),
            ("train.bin", shard_bytes(&many)),
        ],
        generated: Some(generated),
        hostile: vec![
            ("empty file", "train.bin", Vec::new()),
            ("count u64::MAX", "train.bin", shard_header(2, 4, u64::MAX, 65536, 0, &[])),
            ("count 2^61 of 4 bytes (overflows)", "train.bin", shard_header(2, 4, 1 << 61, 1, 0, &[0; 64])),
            ("block 0", "train.bin", shard_header(2, 2, 4, 0, 0, &[0; 8])),
            ("block 1, count 2^40", "train.bin", shard_header(2, 2, 1 << 40, 1, 0, &[0; 64])),
            ("version 1, count 2^62", "train.bin", shard_header(1, 4, 1 << 62, 0, 0, &[0; 16])),
            ("width 3", "train.bin", shard_header(2, 3, 2, 1, 0, &[0; 6])),
            ("a token over the vocabulary", "train.bin", shard_bytes(&[1, 60_000])),
        ],
        run: run_shard,
    });
}

// ---------------------------------------------------------------------------------------------
// Safetensors checkpoints
// ---------------------------------------------------------------------------------------------

/// A safetensors file of (name, dtype, shape, bytes), through the safetensors crate.
fn safetensors_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes()).collect()
}

fn safetensors_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use safetensors::Dtype::*;
    let fp8: Vec<u8> = (0..130 * 3).map(|i| (i % 120) as u8).collect();
    vec![
        (
            "model.safetensors",
            safetensors_file(&[
                ("model.embed_tokens.weight", F32, vec![4, 3], f32s(12)),
                ("model.norm.weight", BF16, vec![3], vec![0x80, 0x3f, 0, 0x40, 0x40, 0x40]),
                ("lm_head.weight", F16, vec![2, 2], vec![0, 0x3c, 0, 0x40, 0, 0x42, 0, 0x44]),
                ("step", F64, vec![1], 7f64.to_le_bytes().to_vec()),
            ]),
        ),
        (
            "model.safetensors",
            safetensors_file(&[
                ("model.layers.0.mlp.up_proj.weight", F8_E4M3, vec![130, 3], fp8),
                ("model.layers.0.mlp.up_proj.weight_scale_inv", F32, vec![2, 1], f32s(2)),
            ]),
        ),
        // A sharded checkpoint's index (the shards it names are written beside it).
        (
            "model.safetensors.index.json",
            br#"{"metadata": {"total_size": 48}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}"#.to_vec(),
        ),
    ]
}

/// A safetensors file whose header says anything: a JSON header of tensors with any dtype,
/// shape and offsets, over a data section of any length.
fn lying_safetensors() -> harness::Inputs {
    let dtype = prop_oneof![
        Just("F32"),
        Just("F16"),
        Just("BF16"),
        Just("F64"),
        Just("F8_E4M3"),
        Just("I64"),
        Just("BOOL"),
        Just("U8"),
        Just("F4")
    ];
    let dim = prop_oneof![0..6u64, Just(1u64 << 32), Just(u64::MAX), Just(128u64), Just(130u64)];
    let off = prop_oneof![0..64u64, any::<u64>()];
    let tensor = (
        prop_oneof![Just("w"), Just("w_scale_inv"), Just("step"), Just("x")],
        dtype,
        proptest::collection::vec(dim, 0..4),
        off.clone(),
        off,
    );
    (proptest::collection::vec(tensor, 0..4), 0..256usize, prop_oneof![Just(None), any::<u64>().prop_map(Some)])
        .prop_map(|(ts, data_len, header_len)| {
            let mut header = serde_json::Map::new();
            for (name, dtype, shape, a, b) in ts {
                header.insert(
                    name.to_string(),
                    serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [a, b]}),
                );
            }
            let h = serde_json::to_vec(&header).unwrap();
            let mut out = header_len.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&h);
            out.extend((0..data_len).map(|i| i as u8));
            ("model.safetensors", out)
        })
        .boxed()
}

fn run_safetensors(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    use safetensors::Dtype::*;
    write(dir, file, bytes);
    let tensors = if file.ends_with(".json") {
        let shard = |name: &str| safetensors_file(&[(name, F32, vec![2, 3], f32s(6))]);
        write(dir, "model-00001-of-00002.safetensors", &shard("a.weight"));
        write(dir, "model-00002-of-00002.safetensors", &shard("b.weight"));
        dsv3c::runtime::checkpoint::read_dir(dir)
    } else {
        dsv3c::runtime::checkpoint::read_file(&dir.join(file))
    }
    .map_err(|e| e.to_string())?;
    // Loading into a program checks every name and shape against the model's.
    let mut p = dsv3c::runtime::backend_suite::arenas(12, 0, 0);
    p.params = vec![dsv3c::runtime::program::Param {
        name: "model.embed_tokens.weight".into(),
        shape: vec![4, 3],
        offset: 0,
        init: dsv3c::runtime::program::Init::Zeros,
        group: dsv3c::runtime::program::ParamGroup::Decay,
    }];
    let mut params = vec![0.0; 12];
    let _ = dsv3c::runtime::checkpoint::load_params(&p, &tensors, &mut params);
    Ok(())
}

#[test]
fn safetensors_checkpoint() {
    let mut hostile = vec![
        ("empty file", "model.safetensors", Vec::new()),
        ("header length u64::MAX", "model.safetensors", u64::MAX.to_le_bytes().to_vec()),
        ("header length 2^31, 8 bytes of file", "model.safetensors", [(1u64 << 31).to_le_bytes(), [b'{'; 8]].concat()),
    ];
    for (what, json) in [
        ("offsets past the data", r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4096]}}"#),
        ("shape overflowing u64", r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#),
        ("offsets reversed", r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#),
        ("an integer dtype", r#"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#),
        ("FP8 without its scale", r#"{"w":{"dtype":"F8_E4M3","shape":[2,4],"data_offsets":[0,8]}}"#),
        (
            "FP8 with a scale of the wrong shape",
            r#"{"w":{"dtype":"F8_E4M3","shape":[2,4],"data_offsets":[0,8]},"w_scale_inv":{"dtype":"F32","shape":[3,3],"data_offsets":[8,44]}}"#,
        ),
        (
            "FP8 of three dimensions",
            r#"{"w":{"dtype":"F8_E4M3","shape":[2,2,2],"data_offsets":[0,8]},"w_scale_inv":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        ),
        (
            "a tensor overlapping another",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        ),
    ] {
        let h = json.as_bytes();
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h);
        b.extend_from_slice(&[0x3c; 64]);
        hostile.push((what, "model.safetensors", b));
    }
    for (what, json) in [
        ("an index naming a missing shard", r#"{"weight_map": {"a.weight": "nowhere.safetensors"}}"#),
        ("an index naming a shard outside the folder", r#"{"weight_map": {"a.weight": "../../../../etc/passwd"}}"#),
        ("an index without a weight map", r#"{"metadata": {}}"#),
    ] {
        hostile.push((what, "model.safetensors.index.json", json.as_bytes().to_vec()));
    }
    fuzz(Target {
        name: "safetensors checkpoint",
        entry: "dsv3c_runtime::checkpoint::read_file / read_dir",
        seeds: safetensors_seeds(),
        generated: Some(lying_safetensors()),
        hostile,
        run: run_safetensors,
    });
}

// ---------------------------------------------------------------------------------------------
// Training checkpoints: manifest, run state, optimizer state
// ---------------------------------------------------------------------------------------------

fn checkpoint_program() -> dsv3c::runtime::Program {
    use dsv3c::runtime::program::{Init, Param, ParamGroup};
    let mut p = dsv3c::runtime::backend_suite::arenas(10, 20, 0);
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

const CHECKPOINT_FILES: [&str; 6] =
    ["manifest.json", "state.json", "optimizer.safetensors", "model.safetensors", "spec.yaml", "config.yaml"];

/// The files of a real checkpoint (written by the trainer's own `save`), by name.
fn checkpoint_files() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        use dsv3c::runtime::train::checkpoint::{save, GuardState, RunState, Texts};
        let p = checkpoint_program();
        let dir = std::env::temp_dir().join(format!("dsv3c-fuzz-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let arena: Vec<f32> = (0..20).map(|i| i as f32 * 0.5).collect();
        let opt = dsv3c::runtime::train::optim::State::from_arena(&p, 7, &arena);
        let run = RunState {
            step: 9,
            tokens: 9 * 128,
            guard: GuardState { skipped_in_row: 1, skipped: 2, norms: vec![0.5, 0.75] },
            ..RunState::fresh(1, "0123abcd".into(), "tiny".into())
        };
        let spec = String::from_utf8(read("spec/tiny.yaml")).unwrap();
        let config = String::from_utf8(recipe_seeds()[3].1.clone()).unwrap();
        let params: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let path = save(&dir, &p, &params, &opt, &run, &Texts { spec: &spec, config: &config }, 1).unwrap();
        CHECKPOINT_FILES.iter().map(|f| (f.to_string(), std::fs::read(path.join(f)).unwrap())).collect()
    })
}

fn run_checkpoint(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    for (name, b) in checkpoint_files() {
        write(dir, name, b);
    }
    write(dir, file, bytes);
    if file != "manifest.json" {
        // Sign the edited file, so that the parser behind the checksum sees it.
        let manifest: BTreeMap<String, String> = CHECKPOINT_FILES[1..]
            .iter()
            .map(|f| (f.to_string(), format!("{:08x}", crc32fast::hash(&std::fs::read(dir.join(f)).unwrap()))))
            .collect();
        write(dir, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    }
    let loaded = dsv3c::runtime::train::checkpoint::load(dir).map_err(|e| e.to_string())?;
    // What a resume does next: the moments and parameters into the program's arenas, and the
    // spec and recipe the checkpoint carries.
    let p = checkpoint_program();
    loaded.optimizer.arena(&p).map_err(|e| format!("checkpoint {}: {e}", dir.display()))?;
    let mut params = vec![0.0; p.param_len];
    dsv3c::runtime::checkpoint::load_params(&p, &loaded.model, &mut params)
        .map_err(|e| format!("checkpoint {}: {e}", dir.display()))?;
    let text = |f: &str| String::from_utf8_lossy(&std::fs::read(dir.join(f)).unwrap()).into_owned();
    let spec_path = dir.join("spec.yaml").display().to_string();
    dsv3c::spec::parse(&spec_path, &text("spec.yaml")).map_err(|e| e.to_string())?;
    let config_path = dir.join("config.yaml").display().to_string();
    dsv3c::spec::config::parse_config(&config_path, &text("config.yaml")).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn training_checkpoint() {
    let seeds: Vec<(&'static str, Vec<u8>)> =
        CHECKPOINT_FILES.iter().map(|f| (*f, checkpoint_files()[*f].clone())).collect();
    let state = |json: &str| ("state.json", json.as_bytes().to_vec());
    let mut hostile: Vec<(&'static str, &'static str, Vec<u8>)> = vec![
        ("a manifest that is a list", "manifest.json", b"[1, 2]".to_vec()),
        ("a manifest naming no files", "manifest.json", b"{}".to_vec()),
        ("a manifest with a wrong checksum", "manifest.json", br#"{"model.safetensors": "00000000"}"#.to_vec()),
        ("an optimizer without its step", "optimizer.safetensors", safetensors_file(&[])),
    ];
    for (what, json) in [
        (
            "step u64::MAX",
            r#"{"step":18446744073709551615,"tokens":0,"position":{"epoch":0,"cursor":0},"seed":1,"config_hash":"","spec":""}"#,
        ),
        (
            "tokens u64::MAX",
            r#"{"step":9,"tokens":18446744073709551615,"position":{"epoch":0,"cursor":0},"seed":1,"config_hash":"","spec":""}"#,
        ),
        (
            "a cursor past every window",
            r#"{"step":9,"tokens":0,"position":{"epoch":18446744073709551615,"cursor":18446744073709551615},"seed":1,"config_hash":"","spec":""}"#,
        ),
        (
            "more skipped steps than steps",
            r#"{"step":9,"tokens":0,"position":{"epoch":0,"cursor":0},"seed":1,"config_hash":"","spec":"","guard":{"skipped_in_row":99,"skipped":99}}"#,
        ),
        (
            "a NaN-like norm",
            r#"{"step":9,"tokens":0,"position":{"epoch":0,"cursor":0},"seed":1,"config_hash":"","spec":"","guard":{"skipped_in_row":0,"skipped":0,"norms":[1e999]}}"#,
        ),
    ] {
        let (f, b) = state(json);
        hostile.push((what, f, b));
    }
    hostile.push((
        "an optimizer step of -1",
        "optimizer.safetensors",
        safetensors_file(&[("step", safetensors::Dtype::F32, vec![1], (-1f32).to_le_bytes().to_vec())]),
    ));
    fuzz(Target {
        name: "training checkpoint",
        entry: "dsv3c_runtime::train::checkpoint::load",
        seeds: seeds.clone(),
        generated: Some(harness::value_edits(
            seeds.into_iter().filter(|(f, _)| !f.ends_with(".safetensors")).collect(),
        )),
        hostile,
        run: run_checkpoint,
    });
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json
// ---------------------------------------------------------------------------------------------

fn run_tokenizer(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
    write(dir, file, bytes);
    let t = dsv3c::runtime::data::tokenizer::Tokenizer::by_name(file, dir).map_err(|e| e.to_string())?;
    let ids = t.encode("MLA caches a 512-wide latent per token. Ünïcödé ✓");
    let _ = t.decode(&ids);
    let _ = (t.vocab_size(), t.eot());
    Ok(())
}

#[test]
fn tokenizer_json() {
    fuzz(Target {
        name: "tokenizer.json",
        entry: "dsv3c_runtime::data::tokenizer::Tokenizer::by_name",
        seeds: vec![("tokenizer.json", read("tests/fixtures/tokenizer/tokenizer.json"))],
        generated: Some(harness::value_edits(vec![(
            "tokenizer.json",
            read("tests/fixtures/tokenizer/tokenizer.json"),
        )])),
        hostile: hostile_text("tokenizer.json"),
        run: run_tokenizer,
    });
}
