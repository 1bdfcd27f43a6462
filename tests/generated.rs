//! generated/ must be what today's compiler writes — plan, Rust graph and CUDA kernels (regenerate with
//! scripts/regenerate.sh).

use std::path::Path;

#[test]
fn generated_outputs_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("generated")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        n += 1;
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let plan: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
        let (batch, seq) = (plan["batch"].as_u64().unwrap() as usize, plan["seq"].as_u64().unwrap() as usize);
        let spec_path = root.join(format!("spec/{name}.yaml"));
        let text = std::fs::read_to_string(&spec_path).unwrap();
        let spec = dsv3c_spec::load(&spec_path).unwrap();
        let program = dsv3c_codegen::compile(&spec, batch, seq).unwrap();
        let stale = "is stale: run scripts/regenerate.sh and commit generated/";
        assert!(
            std::fs::read_to_string(dir.join("plan.json")).unwrap() == dsv3c_codegen::plan::to_json(&program),
            "generated/{name}/plan.json {stale}"
        );
        let graph = dsv3c_codegen::rust::source(&program, &text).unwrap();
        assert!(std::fs::read_to_string(dir.join("graph.rs")).unwrap() == graph, "generated/{name}/graph.rs {stale}");
        // kernels/: exactly the files the CUDA emitter writes today, byte for byte, and their launch table.
        let kernels = dsv3c_codegen::cuda::emit_program(&program).unwrap();
        let kdir = dir.join("kernels");
        let mut want: Vec<String> = kernels.iter().map(|k| format!("{}.cu", k.stem)).collect();
        want.sort();
        let mut have: Vec<String> = std::fs::read_dir(&kdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".cu"))
            .collect();
        have.sort();
        assert!(have == want, "generated/{name}/kernels/ holds other kernels than today's: it {stale}");
        for k in &kernels {
            let path = kdir.join(format!("{}.cu", k.stem));
            assert!(std::fs::read_to_string(&path).unwrap() == k.source, "{} {stale}", path.display());
        }
        let manifest = dsv3c_codegen::cuda::manifest(&program, &kernels);
        assert!(
            std::fs::read_to_string(kdir.join("kernels.json")).unwrap() == manifest,
            "generated/{name}/kernels/kernels.json {stale}"
        );
    }
    assert!(n >= 3, "generated/ should hold tiny, 1b and 671b");
}

/// generated/<spec>/decode/ must be what `dsv3c compile SPEC --decode` writes today: every kernel file,
/// the launch table and the step's plan, byte for byte.
#[test]
fn generated_decode_outputs_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("generated")).unwrap() {
        let dir = entry.unwrap().path().join("decode");
        if !dir.is_dir() {
            continue;
        }
        n += 1;
        let name = dir.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("decode-{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let spec = root.join(format!("spec/{name}.yaml"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_dsv3c"))
            .args(["compile", spec.to_str().unwrap(), "--decode", "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let files = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        let stale = "is stale: run scripts/regenerate.sh and commit generated/";
        assert_eq!(
            files(&dir.join("kernels")),
            files(&out.join("kernels")),
            "generated/{name}/decode/kernels/ {stale}"
        );
        for f in files(&out.join("kernels")).iter().map(|f| format!("kernels/{f}")).chain(["plan.json".to_string()]) {
            let (have, want) = (std::fs::read(dir.join(&f)).unwrap(), std::fs::read(out.join(&f)).unwrap());
            assert!(have == want, "generated/{name}/decode/{f} {stale}");
        }
    }
    assert!(n >= 2, "generated/ should hold the decode programs of tiny and 671b");
}
