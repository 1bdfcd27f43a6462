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
