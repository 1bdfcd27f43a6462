//! Hugging Face config import/export against the published DeepSeek configs.

use dsv3c_spec::hf::{self, HfError};
use dsv3c_spec::params::count;
use dsv3c_spec::types::ScoreFunc;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../tests/fixtures/hf/{name}/config.json", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn deepseek_v3_imports_as_the_671b_spec() {
    let imported = hf::import(&fixture("deepseek-v3"), "671b").unwrap();
    let canonical = dsv3c_spec::canonical::get("671b").unwrap();
    assert_eq!(count(&imported), count(&canonical));
    assert_eq!(imported.attention, canonical.attention);
    assert_eq!(imported.moe.as_ref().unwrap().route_scale, 2.5);
    assert_eq!(imported.precision.fp8, canonical.precision.fp8);
    // The hub's aux_loss_alpha (0.001) differs from the report's α (0.0001): the import is
    // faithful to the config it reads.
    assert_eq!(imported.moe.as_ref().unwrap().seq_aux_alpha, 0.001);
}

#[test]
fn deepseek_v2_lite_imports_with_direct_q_softmax_and_one_group() {
    let s = hf::import(&fixture("deepseek-v2-lite"), "v2-lite").unwrap();
    let moe = s.moe.as_ref().unwrap();
    assert_eq!(s.attention.mla.q_lora_rank, 0);
    assert_eq!((moe.score_func, moe.n_group, moe.bias_update_speed), (ScoreFunc::Softmax, 1, 0.0));
    let p = count(&s);
    // DeepSeek-V2-Lite: 15.7B total, 2.4B active without the input embedding.
    assert_eq!(p.total, 15_706_484_224);
    assert!((p.active_non_embedding as f64 / 2.45e9 - 1.0).abs() < 0.01);
}

#[test]
fn deepseek_v2_group_limited_greedy_is_refused_by_name() {
    let e = hf::import(&fixture("deepseek-v2"), "v2").unwrap_err();
    assert_eq!(e.field(), Some("topk_method"));
    assert!(e.to_string().contains("line"), "{e}");
}

#[test]
fn unknown_and_unsupported_fields_are_named() {
    let base = fixture("deepseek-v3");
    let with = |from: &str, to: &str| base.replacen(from, to, 1);
    for (text, field) in [
        (with("\"use_cache\": true", "\"use_cache\": true, \"sliding_window\": 4096"), "sliding_window"),
        (with("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), "hidden_act"),
        (with("\"num_key_value_heads\": 128", "\"num_key_value_heads\": 8"), "num_key_value_heads"),
        (with("\"scoring_func\": \"sigmoid\"", "\"scoring_func\": \"sparsemax\""), "scoring_func"),
        (with("\"mscale_all_dim\": 1.0,", ""), "rope_scaling.mscale_all_dim"),
        (with("\"type\": \"yarn\"", "\"type\": \"dynamic\""), "rope_scaling"),
        (with("\"hidden_size\": 7168,", ""), "hidden_size"),
        (with("\"vocab_size\": 129280", "\"vocab_size\": -5"), "vocab_size"),
    ] {
        let e = hf::import(&text, "x").unwrap_err();
        assert_eq!(e.field(), Some(field), "{e}");
    }
    assert!(matches!(hf::import("{not json", "x"), Err(HfError::Json(_))));
    assert!(matches!(hf::import("[1]", "x"), Err(HfError::NotObject)));
}

#[test]
fn transformers_5_rope_parameters_are_read() {
    let text = fixture("deepseek-v3")
        .replacen("\"rope_scaling\"", "\"rope_parameters\"", 1)
        .replacen("\"type\": \"yarn\"", "\"rope_type\": \"yarn\", \"rope_theta\": 50000", 1)
        .replacen("\"rope_theta\": 10000,", "", 1);
    let s = hf::import(&text, "x").unwrap();
    assert_eq!(s.attention.mla.rope_theta, 50000.0);
    assert_eq!(s.attention.mla.yarn.as_ref().unwrap().factor, 40.0);
}

#[test]
fn every_hf_exportable_canonical_spec_round_trips() {
    for s in dsv3c_spec::canonical::all() {
        match hf::export(&s) {
            Ok(_) => assert_eq!(hf::import(&hf::export_text(&s).unwrap(), &s.name).unwrap(), s),
            Err(e) => assert_eq!(e.field(), Some("attention.swa"), "{}: {e}", s.name),
        }
    }
}

#[test]
fn export_matches_the_published_v3_config_where_hf_defines_the_key() {
    let exported = hf::export(&dsv3c_spec::canonical::get("671b").unwrap()).unwrap();
    let published: serde_json::Value = serde_json::from_str(&fixture("deepseek-v3")).unwrap();
    for key in [
        "hidden_size",
        "intermediate_size",
        "moe_intermediate_size",
        "vocab_size",
        "num_hidden_layers",
        "num_attention_heads",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "first_k_dense_replace",
        "n_routed_experts",
        "n_shared_experts",
        "num_experts_per_tok",
        "n_group",
        "topk_group",
        "topk_method",
        "scoring_func",
        "norm_topk_prob",
        "routed_scaling_factor",
        "max_position_embeddings",
        "num_nextn_predict_layers",
        "tie_word_embeddings",
        "quantization_config",
    ] {
        assert_eq!(exported[key], published[key], "{key}");
    }
    for key in ["factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"] {
        assert_eq!(exported["rope_scaling"][key].as_f64(), published["rope_scaling"][key].as_f64(), "{key}");
    }
}
