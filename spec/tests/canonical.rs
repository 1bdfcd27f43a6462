//! The canonical specs: they parse, their `inspect` tables are snapshotted, and they follow the
//! figures and the scaling rule they claim.

use dsv3c_spec::canonical::{self, CANONICAL};
use dsv3c_spec::inspect::inspect;
use dsv3c_spec::params::count;

#[test]
fn every_canonical_spec_is_valid_and_matches_its_file() {
    for (name, _) in CANONICAL {
        let from_disk = dsv3c_spec::load(format!("{}/{name}.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(canonical::try_get(name).unwrap().unwrap(), from_disk, "{name}");
        assert_eq!(from_disk.name, name, "a canonical spec's name is its file stem");
    }
}

#[test]
fn every_spec_file_in_the_folder_is_canonical() {
    let dir = std::fs::read_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    for entry in dir {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(CANONICAL.iter().any(|(n, _)| *n == stem), "spec/{stem}.yaml is not listed in canonical.rs");
        }
    }
}

#[test]
fn inspect_tables() {
    for (name, _) in CANONICAL {
        let s = canonical::get(name).unwrap();
        let seq = s.max_seq_len.min(4096);
        insta::assert_snapshot!(format!("inspect_{name}"), inspect(&s, seq, None).render());
    }
}

#[test]
fn deepseek_v3_counts_match_the_published_model() {
    let p = count(&canonical::get("671b").unwrap());
    // HF's meta-device model sums to 671,026,419,200 including the 58·256 router-bias buffers.
    assert_eq!(p.total, 671_026_404_352);
    assert_eq!(p.total + p.buffers - 256, 671_026_419_200);
    assert_eq!(p.active, 37_552_282_624);
    assert_eq!(p.active_non_embedding, 36_625_603_584);
    // Unique MTP parameters: one MoE layer + eh_proj + 3 norms (bias excluded).
    assert_eq!(p.mtp, 11_610_068_224 - 256);
}

#[test]
fn mid_size_specs_follow_the_scaling_rule() {
    for (name, target, experts, top_k) in
        [("1b", 1e9, 8, 2), ("5b", 5e9, 16, 2), ("10b", 10e9, 32, 4), ("15b", 15e9, 64, 4), ("20b", 20e9, 96, 6)]
    {
        let s = canonical::get(name).unwrap();
        let total = count(&s).total as f64;
        assert!((total / target - 1.0).abs() < 0.05, "{name}: {total} is not within 5% of {target}");
        let moe = s.moe.as_ref().unwrap();
        assert_eq!((moe.n_routed_experts, moe.top_k), (experts, top_k), "{name}");
        let mla = &s.attention.mla;
        assert_eq!(mla.kv_lora_rank * 4, s.d_model, "{name}: MLA latent is d_model/4");
        assert_eq!(mla.q_lora_rank, 3 * mla.kv_lora_rank, "{name}");
        assert!(s.precision.fp8.is_some(), "{name} trains with the FP8 recipe");
    }
}

#[test]
fn tiny_has_every_feature_the_cpu_run_exercises() {
    let s = canonical::get("tiny").unwrap();
    let moe = s.moe.as_ref().unwrap();
    assert!(moe.n_routed_experts >= 8 && moe.n_group > 1 && moe.n_shared_experts > 0);
    assert!(s.mtp_depth() >= 1 && s.attention.mla.q_lora_rank > 0 && s.n_dense_layers() >= 1);
    assert!(count(&s).total < 10_000_000, "tiny must train on 2 CPU cores");
}

#[test]
fn swa_mla_small_is_a_125m_hybrid_stack() {
    let s = canonical::get("swa-mla-small").unwrap();
    let (mla, swa) = s.attention_layer_counts();
    assert!(mla > 0 && swa > 0);
    let total = count(&s).total as f64;
    assert!((total / 125e6 - 1.0).abs() < 0.05, "{total}");
}

/// Every key a spec can hold, collected from specs that use every optional block.
fn all_spec_keys() -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_yaml::Value, out: &mut std::collections::BTreeSet<String>) {
        if let serde_yaml::Value::Mapping(m) = v {
            for (k, v) in m {
                out.insert(k.as_str().unwrap().to_string());
                walk(v, out);
            }
        }
    }
    let mut keys = Default::default();
    let mut dyt = canonical::get("swa-mla-small").unwrap();
    dyt.norm = dsv3c_spec::types::Norm::Dyt { alpha_init: 0.5 };
    dyt.precision.fp8 = canonical::get("671b").unwrap().precision.fp8;
    for s in [canonical::get("671b").unwrap(), dyt] {
        walk(&serde_yaml::to_value(&s).unwrap(), &mut keys);
    }
    keys
}

#[test]
fn the_readme_documents_every_spec_field() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let reference = &readme[readme.find("## Spec reference").expect("README has a spec reference")..];
    for key in all_spec_keys() {
        assert!(reference.contains(&format!("`{key}`")), "README's spec reference does not document `{key}`");
    }
}

#[test]
fn the_readme_documents_every_recipe_field() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let reference = &readme[readme.find("## Run recipe reference").expect("README has a recipe reference")..];
    let reference = &reference[..reference.find("\n## ").unwrap_or(reference.len())];
    let recipe = dsv3c_spec::config::load_recipe(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/1b.yaml"
    )))
    .unwrap();
    let value = serde_yaml::to_value(&recipe.config).unwrap();
    let serde_yaml::Value::Mapping(top) = value else { panic!("a recipe is a mapping") };
    for (k, v) in top {
        let k = k.as_str().unwrap();
        match v {
            serde_yaml::Value::Mapping(inner) => {
                for (kk, _) in inner {
                    let kk = kk.as_str().unwrap();
                    assert!(
                        reference.contains(&format!("`{k}.{kk}`")) || reference.contains(&format!(".{kk}`")),
                        "README does not document `{k}.{kk}`"
                    );
                }
            }
            _ => assert!(reference.contains(&format!("`{k}`")), "README does not document `{k}`"),
        }
    }
}
