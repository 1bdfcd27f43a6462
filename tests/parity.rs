//! Hugging Face parity: `dsv3c eval` on the committed fixtures (tests/parity/make_fixtures.py)
//! gives transformers' float64 loss and every parameter's gradient.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsv3c_runtime::checkpoint::read_file;
use dsv3c_runtime::tolerance::{rel_l2, GRAD_REL_L2_F32, LOSS_REL_F32};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/fixtures");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    v.sort();
    assert!(v.len() >= 3, "parity fixtures are missing");
    v
}

fn eval(dir: &Path, grads: &Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(["eval", "--hf", dir.to_str().unwrap(), "--tokens", dir.join("tokens.json").to_str().unwrap(), "--json"])
        .args(["--dump-grads", grads.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn loss_and_every_gradient_match_transformers_float64() {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("grads-{name}.safetensors"));
        let got = eval(&dir, &out);
        let (l, e) = (got["loss"].as_f64().unwrap(), expected["loss"].as_f64().unwrap());
        assert!(((l - e) / e).abs() < LOSS_REL_F32, "{name}: loss {l} vs {e}");
        assert_eq!(got["tokens"], expected["tokens"]);

        let want = read_file(&dir.join("grads.safetensors")).unwrap();
        let have = read_file(&out).unwrap();
        assert_eq!(have.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}: gradient names differ");
        for (k, w) in &want {
            let h = &have[k];
            assert_eq!(h.shape, w.shape, "{name}: {k}");
            let err = rel_l2(&h.data, &w.data);
            assert!(err < GRAD_REL_L2_F32, "{name}: {k} relative L2 error {err:.2e}");
        }
    }
}

/// The fixture with q-LoRA and MoE layers 1 and 2.
fn moe_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/fixtures/qlora_groups_yarn")
}

/// A copy of a fixture in a scratch folder, with `edit` applied to its tensors and config.
fn corrupted(
    tag: &str,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, dsv3c_runtime::checkpoint::Tensor>, &mut serde_json::Value),
) -> PathBuf {
    let src = &moe_fixture();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("corrupt-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut tensors = read_file(&src.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut tensors, &mut config);
    let list: Vec<_> = tensors.into_iter().map(|(k, t)| (k, t.shape, t.data)).collect();
    dsv3c_runtime::checkpoint::write_file(&dir.join("model.safetensors"), &list).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("tokens.json"), dir.join("tokens.json")).unwrap();
    dir
}

fn eval_err(dir: &Path, tokens: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(["eval", "--hf", dir.to_str().unwrap(), "--tokens", tokens.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected a failure, got {}", String::from_utf8_lossy(&o.stdout));
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_checkpoints_tokens_and_configs_are_named_not_panicked() {
    let missing = corrupted("missing", |t, _| {
        t.remove("model.layers.1.mlp.experts.3.up_proj.weight");
    });
    assert!(eval_err(&missing, &missing.join("tokens.json")).contains("model.layers.1.mlp.experts.3.up_proj.weight"));

    let shape = corrupted("shape", |t, _| {
        let x = t.get_mut("model.layers.0.self_attn.kv_b_proj.weight").unwrap();
        x.shape = vec![x.shape[1], x.shape[0]];
    });
    let err = eval_err(&shape, &shape.join("tokens.json"));
    assert!(err.contains("model.layers.0.self_attn.kv_b_proj.weight") && err.contains("shape"), "{err}");

    let field = corrupted("field", |_, c| c["sliding_window"] = serde_json::json!(4));
    assert!(eval_err(&field, &field.join("tokens.json")).contains("sliding_window"));

    let invalid = corrupted("invalid", |_, c| c["num_experts_per_tok"] = serde_json::json!(99));
    assert!(eval_err(&invalid, &invalid.join("tokens.json")).contains("top_k"));

    let dir = &moe_fixture();
    let bad_tokens = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-tokens.json");
    for (text, needle) in [
        ("[[1, 2, 96]]", "[0][2]"),
        ("[[1, 2], [3]]", "sequence 1"),
        ("[[1, -2]]", "[0][1]"),
        ("[]", "no tokens"),
        ("{\"a\": 1}", "array"),
        ("[[1.5]]", "[0][0]"),
    ] {
        std::fs::write(&bad_tokens, text).unwrap();
        let err = eval_err(dir, &bad_tokens);
        assert!(err.contains(needle), "{text}: {err}");
    }
    let long = format!("[[{}]]", vec!["1"; 200].join(","));
    std::fs::write(&bad_tokens, long).unwrap();
    assert!(eval_err(dir, &bad_tokens).contains("max_seq_len"));

    let garbage = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupt-garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::copy(dir.join("config.json"), garbage.join("config.json")).unwrap();
    std::fs::write(garbage.join("model.safetensors"), b"not a safetensors file").unwrap();
    assert!(eval_err(&garbage, &dir.join("tokens.json")).contains("safetensors"));
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupt-empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(dir.join("config.json"), empty.join("config.json")).unwrap();
    assert!(eval_err(&empty, &dir.join("tokens.json")).contains("model.safetensors"));
}

/// Our own float64 PyTorch reference (tests/parity/reference.py) for what transformers lacks:
/// MTP, sliding-window attention with sinks, DynamicTanh, the balance loss, softmax scores.
#[test]
fn mtp_swa_dyt_balance_and_softmax_match_the_own_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/own");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    assert!(dirs.len() >= 2);
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let spec = dsv3c_spec::load(dir.join("spec.yaml")).unwrap();
        let tokens: Vec<Vec<u32>> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
        let (batch, seq) = (tokens.len(), tokens[0].len());
        let program = dsv3c_codegen::compile(&spec, batch, seq).unwrap();
        let mut cpu = dsv3c_runtime::cpu::Cpu::new(&program);
        let weights = read_file(&dir.join("model.safetensors")).unwrap();
        let unused = dsv3c_runtime::checkpoint::load_params(&program, &weights, &mut cpu.params).unwrap();
        assert!(unused.is_empty(), "{name}: unused {unused:?}");
        cpu.gradients(&program, &tokens.iter().flatten().map(|&t| t as f32).collect::<Vec<_>>()).unwrap();

        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let close = |got: f32, want: &serde_json::Value, what: &str| {
            let want = want.as_f64().unwrap();
            assert!(((got as f64 - want) / want).abs() < LOSS_REL_F32, "{name}: {what} {got} vs {want}");
        };
        close(cpu.read(program.io.loss)[0], &expected["loss"], "total loss");
        close(cpu.read(program.io.main_loss)[0], &expected["main_loss"], "main loss");
        assert_eq!(program.io.mtp_losses.len(), expected["mtp_losses"].as_array().unwrap().len());
        for (k, s) in program.io.mtp_losses.iter().enumerate() {
            close(cpu.read(*s)[0], &expected["mtp_losses"][k], "mtp loss");
        }
        let want = read_file(&dir.join("grads.safetensors")).unwrap();
        for p in program.params.iter().filter(|p| p.group != dsv3c_runtime::program::ParamGroup::Frozen) {
            let w = &want[&p.name];
            let err = rel_l2(&cpu.grads[p.offset..p.offset + p.len()], &w.data);
            assert!(err < GRAD_REL_L2_F32, "{name}: {} relative L2 error {err:.2e}", p.name);
        }
    }
}

/// `dsv3c eval --hf DIR --tokens TOKENS --json`: the loss, or the failure's stderr.
fn eval_loss(dir: &Path, tokens: &Path) -> Result<f64, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_dsv3c"))
        .args(["eval", "--hf", dir.to_str().unwrap(), "--tokens", tokens.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    if !o.status.success() {
        return Err(err);
    }
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    Ok(v["loss"].as_f64().unwrap())
}

/// Rewrites a safetensors file tensor by tensor (raw bytes kept): `edit` may drop a tensor or
/// change its dtype.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str, safetensors::Dtype) -> Option<safetensors::Dtype>) {
    use safetensors::tensor::TensorView;
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views = Vec::new();
    for (name, v) in st.tensors() {
        if let Some(dtype) = edit(&name, v.dtype()) {
            views.push((name.clone(), TensorView::new(dtype, v.shape().to_vec(), v.data()).unwrap()));
        }
    }
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

/// Real checkpoint formats (tests/parity/make_fixtures.py --formats): one model stored as bf16,
/// f16, FP8 E4M3 with 128×128 `weight_scale_inv` blocks (ragged edges), a sharded bf16 index and
/// transformers 5's fused expert tensors; each loss equals transformers' float64 loss on the
/// stored values.
#[test]
fn bf16_f16_fp8_sharded_and_fused_checkpoints_give_transformers_loss() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/formats");
    let tokens = root.join("tokens.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap()).unwrap();
    let shards = std::fs::read_dir(root.join("sharded"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".safetensors"));
    assert!(shards.count() > 1 && root.join("sharded/model.safetensors.index.json").exists());
    for fmt in ["bf16", "f16", "fp8", "sharded", "fused"] {
        let want = expected[fmt].as_f64().unwrap();
        let got = eval_loss(&root.join(fmt), &tokens).unwrap_or_else(|e| panic!("{fmt}: {e}"));
        assert!(((got - want) / want).abs() < LOSS_REL_F32, "{fmt}: loss {got} vs transformers' {want}");
    }
    // The formats really differ: FP8's loss is far from bf16's (scales applied, not skipped).
    let (fp8, bf16) = (expected["fp8"].as_f64().unwrap(), expected["bf16"].as_f64().unwrap());
    assert!(((fp8 - bf16) / bf16).abs() > 100.0 * LOSS_REL_F32);

    // A missing scale and an unsupported dtype are named errors.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("formats-broken");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::copy(root.join("fp8/config.json"), scratch.join("config.json")).unwrap();
    let weights = root.join("fp8/model.safetensors");
    let victim = "model.layers.1.self_attn.kv_b_proj.weight";
    rewrite(&weights, &scratch.join("model.safetensors"), |n, d| (n != format!("{victim}_scale_inv")).then_some(d));
    let err = eval_loss(&scratch, &tokens).unwrap_err();
    assert!(err.contains(victim) && err.contains("scale_inv"), "{err}");
    rewrite(&weights, &scratch.join("model.safetensors"), |n, d| {
        Some(if n == "model.embed_tokens.weight" { safetensors::Dtype::I16 } else { d })
    });
    let err = eval_loss(&scratch, &tokens).unwrap_err();
    assert!(err.contains("model.embed_tokens.weight") && err.contains("I16"), "{err}");
}
