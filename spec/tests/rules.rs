//! One test per validation rule: a small edit of `tiny.yaml` that breaks exactly that rule, and
//! the problem must name the rule and the line of the field the edit touched.

use dsv3c_spec::{ProblemKind, Rule, SpecError};

const TINY: &str = include_str!("../tiny.yaml");

/// Applies `(from, to)` replacements (each must match) to tiny.yaml.
fn edit(edits: &[(&str, &str)]) -> String {
    let mut s = TINY.to_string();
    for (from, to) in edits {
        assert!(s.contains(from), "tiny.yaml has no `{from}`");
        s = s.replacen(from, to, 1);
    }
    s
}

fn problems(src: &str) -> Vec<dsv3c_spec::Problem> {
    match dsv3c_spec::parse("t.yaml", src) {
        Ok(_) => vec![],
        Err(SpecError::Problems(set)) => set.problems,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The edit must trigger `rule`, located on the line holding `marker` (None: line 1).
fn assert_rule(rule: Rule, edits: &[(&str, &str)], marker: Option<&str>) {
    let src = edit(edits);
    let ps = problems(&src);
    let p = ps.iter().find(|p| p.rule() == Some(rule)).unwrap_or_else(|| panic!("{rule:?} not raised; got {ps:#?}"));
    let want_line = marker.map_or(1, |m| src.lines().position(|l| l.contains(m)).expect("marker in source") + 1);
    assert_eq!(p.pos.line, want_line, "{rule:?} located at {:?}: {}", p.pos, p.message);
    assert!(p.help.as_ref().is_some_and(|h| !h.is_empty()), "{rule:?} says what would be valid");
}

macro_rules! rule_tests {
    ($($name:ident: $rule:expr, [$($from:expr => $to:expr),*], $marker:expr;)*) => {
        $(#[test] fn $name() { assert_rule($rule, &[$(($from, $to)),*], $marker); })*
        /// Every rule has a test above.
        #[test]
        fn every_rule_is_tested() {
            let tested = [$($rule),*];
            for r in Rule::ALL {
                assert!(tested.contains(&r), "rule {:?} has no test", r);
            }
        }
    };
}

rule_tests! {
    range_d_model: Rule::Range, ["d_model: 64" => "d_model: 0"], Some("d_model: 0");
    range_layers: Rule::Range, ["n_layers: 3" => "n_layers: 100000"], Some("n_layers: 100000");
    real_range_eps: Rule::RealRange, ["eps: 1.0e-6" => "eps: -1"], Some("eps: -1");
    real_range_route_scale: Rule::RealRange, ["route_scale: 2.5" => "route_scale: .nan"], Some("route_scale");
    name: Rule::Name, ["name: tiny" => "name: \"a/b\""], Some("name: \"a/b\"");
    dense_covers_all_layers: Rule::DenseCoversAllLayers,
        ["moe:\n  n_routed_experts: 8\n  n_shared_experts: 1\n  top_k: 2\n  moe_intermediate_size: 32\n  score_func: sigmoid\n  n_group: 4\n  top_groups: 2\n  route_scale: 2.5\n  norm_topk_prob: true\n  bias_update_speed: 0.001\n  seq_aux_alpha: 0.0001\n" => ""],
        Some("  n_layers: 1");
    dense_leaves_moe_layers: Rule::DenseLeavesMoeLayers, ["  n_layers: 1" => "  n_layers: 3"], Some("  n_layers: 3");
    ffn_missing: Rule::FfnMissing,
        ["dense:\n  n_layers: 1\n  intermediate_size: 192\n" => "", "moe:\n  n_routed_experts: 8\n  n_shared_experts: 1\n  top_k: 2\n  moe_intermediate_size: 32\n  score_func: sigmoid\n  n_group: 4\n  top_groups: 2\n  route_scale: 2.5\n  norm_topk_prob: true\n  bias_update_speed: 0.001\n  seq_aux_alpha: 0.0001\n" => ""],
        None;
    rope_dim_even: Rule::RopeDimEven, ["qk_rope_head_dim: 8" => "qk_rope_head_dim: 7"], Some("qk_rope_head_dim");
    yarn_original_length: Rule::YarnOriginalLength,
        ["rope_theta: 10000" => "rope_theta: 10000\n    yarn: {factor: 4, original_max_position_embeddings: 1024, mscale: 1, mscale_all_dim: 1}"],
        Some("yarn:");
    yarn_betas: Rule::YarnBetas,
        ["rope_theta: 10000" => "rope_theta: 10000\n    yarn:\n      factor: 4\n      original_max_position_embeddings: 64\n      beta_fast: 1\n      beta_slow: 32"],
        Some("beta_fast: 1");
    pattern_length: Rule::PatternLength, ["pattern: [mla]" => "pattern: []"], Some("pattern:");
    swa_missing: Rule::SwaMissing, ["pattern: [mla]" => "pattern: [mla, swa]"], Some("pattern:");
    swa_unused: Rule::SwaUnused, ["pattern: [mla]" => "pattern: [mla]\n  swa: {window: 64, sink_tokens: 4}"], Some("swa:");
    swa_window: Rule::SwaWindow, ["pattern: [mla]" => "pattern: [swa, mla]\n  swa:\n    window: 256\n    sink_tokens: 4"], Some("window: 256");
    swa_sinks: Rule::SwaSinks, ["pattern: [mla]" => "pattern: [swa, mla]\n  swa:\n    window: 16\n    sink_tokens: 16"], Some("sink_tokens: 16");
    top_k: Rule::TopK, ["top_k: 2" => "top_k: 9"], Some("top_k: 9");
    groups_divide_experts: Rule::GroupsDivideExperts, ["n_group: 4" => "n_group: 3"], Some("n_group: 3");
    top_groups: Rule::TopGroups, ["top_groups: 2" => "top_groups: 5"], Some("top_groups: 5");
    top_groups_capacity: Rule::TopGroupsCapacity, ["top_groups: 2" => "top_groups: 1", "top_k: 2" => "top_k: 3"], Some("top_groups: 1");
    group_size: Rule::GroupSize, ["n_group: 4" => "n_group: 8", "top_groups: 2" => "top_groups: 4"], Some("n_group: 8");
    master_precision: Rule::MasterPrecision, ["master: f32" => "master: bf16"], Some("master: bf16");
    fp8_tile_size: Rule::Fp8TileSize, ["compute: f32" => "compute: f32\n  fp8: {activation_tile: 24, weight_block: 24}"], Some("fp8:");
    fp8_tile_matches_block: Rule::Fp8TileMatchesBlock, ["compute: f32" => "compute: f32\n  fp8:\n    activation_tile: 32\n    weight_block: 16"], Some("weight_block: 16");
    fp8_tiles_k: Rule::Fp8TilesK, ["compute: f32" => "compute: f32\n  fp8: {activation_tile: 128, weight_block: 128}"], Some("d_model: 64");
    fp8_kv_cache: Rule::Fp8KvCache, ["compute: f32" => "compute: f32\n  kv_cache: fp8"], Some("kv_cache: fp8");
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let ps = problems(&edit(&[("top_k: 2", "top_k: 9"), ("qk_rope_head_dim: 8", "qk_rope_head_dim: 7")]));
    assert!(ps.iter().any(|p| p.rule() == Some(Rule::TopK)));
    assert!(ps.iter().any(|p| p.rule() == Some(Rule::RopeDimEven)));
}

#[test]
fn shape_errors_are_located() {
    for (edits, marker, needle) in [
        (vec![("  top_k: 2", "  top_kk: 2")], "top_kk", "unknown field `top_kk`"),
        (vec![("d_model: 64", "d_model: sixty")], "d_model", "invalid type"),
        (vec![("type: rmsnorm", "type: layernorm")], "layernorm", "unknown variant `layernorm`"),
        (vec![("  eps: 1.0e-6", "  alpha_init: 1")], "norm:", "alpha_init"),
        (vec![("vocab_size: 50304\n", "")], "name: tiny", "missing field `vocab_size`"),
    ] {
        let src = edit(&edits);
        let ps = problems(&src);
        assert_eq!(ps.len(), 1, "{ps:#?}");
        assert_eq!(ps[0].kind, ProblemKind::Shape);
        assert!(ps[0].message.contains(needle), "{}", ps[0].message);
        let line = src.lines().position(|l| l.contains(marker)).unwrap() + 1;
        assert!(ps[0].pos.line >= line, "{needle}: {:?} vs line {line}", ps[0].pos);
        assert!(ps[0].pos.line <= line + 1, "{needle}: {:?} vs line {line}", ps[0].pos);
    }
}

#[test]
fn syntax_errors_are_reported_as_syntax() {
    let src = "name: x\nd_model: [1,\n";
    let ps = problems(src);
    assert_eq!(ps[0].kind, ProblemKind::Syntax);
    assert!(ps[0].pos.line >= 2);
}

#[test]
fn the_message_names_file_line_and_column() {
    let err = dsv3c_spec::parse("conf/t.yaml", &edit(&[("top_k: 2", "top_k: 9")])).unwrap_err();
    let line = TINY.lines().position(|l| l.contains("top_k: 2")).unwrap() + 1;
    assert!(err.to_string().contains(&format!("conf/t.yaml:{line}:3: moe.top_k = 9")), "{err}");
}
