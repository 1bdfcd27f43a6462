//! Hugging Face `config.json` (DeepseekV3 / DeepseekV2) to a spec and back.
//!
//! The one place that knows how HF config keys map to spec fields. Import accepts transformers'
//! legacy keys (`rope_theta` + `rope_scaling`) and 5.x's `rope_parameters`; every key is either
//! mapped, checked against the one value we support, or known metadata — anything else is
//! refused by name. Export writes the legacy form, which transformers 4.x and 5.x both read;
//! spec settings HF has no key for (dtypes, FP8 tiles, balancing speed, MTP weight) travel in a
//! `dsv3c` object that HF ignores and import reads back, so spec -> HF -> spec is lossless.

use serde_json::{json, Map, Value};

use crate::types::*;

/// Why a config cannot be imported or a spec exported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HfError {
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    #[error("config.json must be a JSON object")]
    NotObject,
    #[error("field `{field}` is missing{}", line_note(*.line))]
    Missing { field: String, line: Option<usize> },
    #[error("field `{field}` = {value}: {reason}{}", line_note(*.line))]
    Unsupported { field: String, value: String, reason: String, line: Option<usize> },
    #[error("spec field `{field}` has no Hugging Face DeepseekV3 equivalent: {reason}")]
    NotExportable { field: &'static str, reason: String },
}

/// Why a `config.json` file cannot be used as a spec: the file, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum HfFileError {
    #[error("cannot read {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Config { path: std::path::PathBuf, source: HfError },
    #[error("{path}: the imported spec breaks a rule at `{field}`: {message} ({help})")]
    Invalid { path: std::path::PathBuf, field: String, message: String, help: String },
}

/// Reads the `config.json` at `path` and imports it as a spec named `name` (not yet held to the
/// spec rules: see [`checked`]).
pub fn load(path: &std::path::Path, name: &str) -> Result<Spec, HfFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfFileError::Io { path: path.into(), source })?;
    import(&text, name).map_err(|source| HfFileError::Config { path: path.into(), source })
}

/// `spec`, imported from `path`, if it keeps every spec rule (an imported spec is held to the
/// rules of a hand-written one).
pub fn checked(path: &std::path::Path, spec: Spec) -> Result<Spec, HfFileError> {
    match crate::validate::validate(&spec).into_iter().next() {
        Some(v) => Err(HfFileError::Invalid { path: path.into(), field: v.path, message: v.message, help: v.help }),
        None => Ok(spec),
    }
}

fn line_note(line: Option<usize>) -> String {
    line.map(|l| format!(" (config.json line {l})")).unwrap_or_default()
}

impl HfError {
    /// The config field (or spec field) the error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            HfError::Missing { field, .. } | HfError::Unsupported { field, .. } => Some(field),
            HfError::NotExportable { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Config keys that carry no model semantics and are ignored on import.
const METADATA: &[&str] = &[
    "architectures",
    "auto_map",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "transformers_version",
    "use_cache",
    "_name_or_path",
    "ep_size",
    "output_router_logits",
    "return_dict",
    "num_mtp_layers",
];

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    text: &'a str,
    used: std::collections::BTreeSet<&'a str>,
}

impl<'a> Reader<'a> {
    fn line(&self, field: &str) -> Option<usize> {
        let needle = format!("\"{field}\"");
        self.text.find(&needle).map(|i| self.text[..i].matches('\n').count() + 1)
    }
    fn unsupported(&self, field: &str, value: &Value, reason: impl Into<String>) -> HfError {
        HfError::Unsupported {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
            line: self.line(field),
        }
    }
    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        let (k, v) = self.obj.get_key_value(key)?;
        self.used.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }
    fn u64(&mut self, key: &'a str) -> Result<Option<u64>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.unsupported(key, v, "expected a non-negative integer")),
        }
    }
    fn req_u64(&mut self, key: &'a str) -> Result<u64, HfError> {
        self.u64(key)?.ok_or_else(|| HfError::Missing { field: key.to_string(), line: None })
    }
    fn f64(&mut self, key: &'a str) -> Result<Option<f64>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.unsupported(key, v, "expected a number")),
        }
    }
    fn bool(&mut self, key: &'a str) -> Result<Option<bool>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.unsupported(key, v, "expected true or false")),
        }
    }
    fn str(&mut self, key: &'a str) -> Result<Option<&'a str>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.unsupported(key, v, "expected a string")),
        }
    }
    /// The key must be absent or hold `want`.
    fn expect(&mut self, key: &'a str, want: &Value, reason: &str) -> Result<(), HfError> {
        match self.get(key) {
            Some(v) if v != want => Err(self.unsupported(key, v, format!("only {want} is supported: {reason}"))),
            _ => Ok(()),
        }
    }
}

/// Imports a Hugging Face DeepseekV3/V2 `config.json` as a spec named `name`.
pub fn import(text: &str, name: &str) -> Result<Spec, HfError> {
    let value: Value = serde_json::from_str(text).map_err(|e| HfError::Json(e.to_string()))?;
    let obj = value.as_object().ok_or(HfError::NotObject)?;
    let mut r = Reader { obj, text, used: Default::default() };
    for k in METADATA {
        r.get(k);
    }
    let extras = r.get("dsv3c").cloned();

    if let Some(mt) = r.str("model_type")? {
        if mt != "deepseek_v3" && mt != "deepseek_v2" {
            return Err(r.unsupported("model_type", &json!(mt), "dsv3c imports deepseek_v3 and deepseek_v2 configs"));
        }
    }
    r.expect("hidden_act", &json!("silu"), "experts and FFNs are SwiGLU")?;
    r.expect("attention_bias", &json!(false), "MLA projections have no bias")?;
    r.expect("mlp_bias", &json!(false), "FFN projections have no bias")?;
    r.expect("attention_dropout", &json!(0.0), "dropout is not part of pre-training here")?;
    r.expect("pretraining_tp", &json!(1), "it only matters to the original tensor-parallel checkpoint")?;
    r.expect("moe_layer_freq", &json!(1), "every layer after the dense ones is MoE")?;
    r.expect("rope_interleave", &json!(true), "DeepSeek's rope rows are interleaved pairs")?;

    let d_model = r.req_u64("hidden_size")?;
    let n_layers = r.req_u64("num_hidden_layers")?;
    let n_heads = r.req_u64("num_attention_heads")?;
    if let Some(kvh) = r.u64("num_key_value_heads")? {
        if kvh != n_heads {
            return Err(r.unsupported(
                "num_key_value_heads",
                &json!(kvh),
                format!("MLA has one key/value per head: must equal num_attention_heads = {n_heads}"),
            ));
        }
    }
    let max_seq_len = r.u64("max_position_embeddings")?.unwrap_or(4096);
    // transformers 5 writes two derived dims; they must agree with the ones they derive from.
    let rope_dim = r.obj.get("qk_rope_head_dim").and_then(Value::as_u64);
    let nope_dim = r.obj.get("qk_nope_head_dim").and_then(Value::as_u64);
    if let Some(hd) = r.u64("head_dim")? {
        if Some(hd) != rope_dim {
            return Err(r.unsupported(
                "head_dim",
                &json!(hd),
                "DeepseekV3's head_dim is the rope dim: must equal qk_rope_head_dim",
            ));
        }
    }
    if let Some(qk) = r.u64("qk_head_dim")? {
        if Some(qk) != rope_dim.zip(nope_dim).map(|(a, b)| a + b) {
            return Err(r.unsupported("qk_head_dim", &json!(qk), "must equal qk_nope_head_dim + qk_rope_head_dim"));
        }
    }

    // Positions: legacy rope_theta + rope_scaling, or 5.x rope_parameters.
    let mut rope_theta = r.f64("rope_theta")?.unwrap_or(10000.0);
    let mut yarn = None;
    let scaling_key = if r.obj.contains_key("rope_parameters") { "rope_parameters" } else { "rope_scaling" };
    if let Some(rs) = r.get(scaling_key) {
        let o = rs.as_object().ok_or_else(|| r.unsupported(scaling_key, rs, "expected an object"))?;
        let kind = o.get("rope_type").or_else(|| o.get("type")).and_then(Value::as_str).unwrap_or("default");
        if let Some(t) = o.get("rope_theta").and_then(Value::as_f64) {
            rope_theta = t;
        }
        let known = [
            "rope_type",
            "type",
            "rope_theta",
            "factor",
            "original_max_position_embeddings",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
        ];
        if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(r.unsupported(&format!("{scaling_key}.{k}"), &o[k.as_str()], "unknown rope scaling key"));
        }
        match kind {
            "default" => {}
            "yarn" => {
                let num = |k: &str, dflt: Option<f64>| -> Result<f64, HfError> {
                    match o.get(k) {
                        Some(v) => v
                            .as_f64()
                            .ok_or_else(|| r.unsupported(&format!("{scaling_key}.{k}"), v, "expected a number")),
                        None => dflt.ok_or_else(|| HfError::Missing {
                            field: format!("{scaling_key}.{k}"),
                            line: r.line(scaling_key),
                        }),
                    }
                };
                let factor = num("factor", None)?;
                let orig = num("original_max_position_embeddings", None)?;
                if orig < 1.0 || orig.fract() != 0.0 {
                    return Err(r.unsupported(
                        &format!("{scaling_key}.original_max_position_embeddings"),
                        &json!(orig),
                        "expected a positive integer",
                    ));
                }
                // Without mscale/mscale_all_dim HF rescales cos/sin instead of the softmax — not
                // DeepSeek-V3 semantics (reference §1.4), so both are required.
                for k in ["mscale", "mscale_all_dim"] {
                    if !o.contains_key(k) {
                        return Err(HfError::Missing {
                            field: format!("{scaling_key}.{k}"),
                            line: r.line(scaling_key),
                        });
                    }
                }
                yarn = Some(Yarn {
                    factor,
                    original_max_position_embeddings: orig as u64,
                    beta_fast: num("beta_fast", Some(32.0))?,
                    beta_slow: num("beta_slow", Some(1.0))?,
                    mscale: num("mscale", None)?,
                    mscale_all_dim: num("mscale_all_dim", None)?,
                });
            }
            other => {
                return Err(r.unsupported(
                    scaling_key,
                    rs,
                    format!("rope type `{other}` is not supported (default or yarn)"),
                ))
            }
        }
    }

    let mla = Mla {
        n_heads,
        q_lora_rank: r.u64("q_lora_rank")?.unwrap_or(0),
        kv_lora_rank: r.req_u64("kv_lora_rank")?,
        qk_nope_head_dim: r.req_u64("qk_nope_head_dim")?,
        qk_rope_head_dim: r.req_u64("qk_rope_head_dim")?,
        v_head_dim: r.req_u64("v_head_dim")?,
        rope_theta,
        yarn,
    };

    // FFNs.
    let first_dense = r.u64("first_k_dense_replace")?.unwrap_or(0);
    let intermediate = r.u64("intermediate_size")?;
    let experts = r.u64("n_routed_experts")?;
    let score_func = match r.str("scoring_func")? {
        None | Some("sigmoid") => ScoreFunc::Sigmoid,
        Some("softmax") => ScoreFunc::Softmax,
        Some(other) => return Err(r.unsupported("scoring_func", &json!(other), "use sigmoid or softmax")),
    };
    let topk_method = r.str("topk_method")?.unwrap_or("noaux_tc");
    let n_group = r.u64("n_group")?.unwrap_or(1);
    let top_groups = r.u64("topk_group")?.unwrap_or(1);
    let aux_alpha = r.f64("aux_loss_alpha")?.unwrap_or(0.0);
    let seq_aux = r.bool("seq_aux")?.unwrap_or(true);
    let moe_fields = (
        r.u64("n_shared_experts")?,
        r.u64("num_experts_per_tok")?,
        r.u64("moe_intermediate_size")?,
        r.f64("routed_scaling_factor")?,
        r.bool("norm_topk_prob")?,
    );
    let bias_speed = match topk_method {
        "noaux_tc" => 0.001,
        "greedy" => 0.0,
        // Group-limited greedy scores a group by its best expert; with one group it is plain top-k.
        "group_limited_greedy" if n_group <= 1 => 0.0,
        "group_limited_greedy" => {
            return Err(r.unsupported(
                "topk_method",
                &json!(topk_method),
                "DeepSeek-V2's group_limited_greedy scores a group by its single best expert; dsv3c routes by V3's sum of the top-2 (noaux_tc)",
            ))
        }
        other => return Err(r.unsupported("topk_method", &json!(other), "use noaux_tc, greedy, or group_limited_greedy with one group")),
    };
    let moe = match experts {
        Some(e) if e > 0 && first_dense < n_layers => Some(Moe {
            n_routed_experts: e,
            n_shared_experts: moe_fields.0.unwrap_or(0),
            top_k: moe_fields.1.ok_or_else(|| HfError::Missing { field: "num_experts_per_tok".into(), line: None })?,
            moe_intermediate_size: moe_fields
                .2
                .ok_or_else(|| HfError::Missing { field: "moe_intermediate_size".into(), line: None })?,
            score_func,
            n_group,
            top_groups,
            route_scale: moe_fields.3.unwrap_or(1.0),
            norm_topk_prob: moe_fields.4.unwrap_or(false),
            bias_update_speed: bias_speed,
            seq_aux_alpha: if seq_aux { aux_alpha } else { 0.0 },
        }),
        _ => None,
    };
    let missing = |field: &str| HfError::Missing { field: field.to_string(), line: None };
    let dense = match (&moe, intermediate) {
        (None, Some(i)) => Some(Dense { n_layers, intermediate_size: i }),
        (Some(_), Some(i)) => Some(Dense { n_layers: first_dense, intermediate_size: i }),
        (Some(_), None) if first_dense == 0 => None,
        _ => return Err(missing("intermediate_size")),
    };
    let mtp_depth =
        r.u64("num_nextn_predict_layers")?.or(obj.get("num_mtp_layers").and_then(Value::as_u64)).unwrap_or(0);
    let param = match r.str("torch_dtype")?.or(obj.get("dtype").and_then(Value::as_str)) {
        // A float16 checkpoint is read exactly (f16 widens to f32); dsv3c keeps 16-bit weights
        // as bf16, the format it trains in.
        None | Some("bfloat16") | Some("float16") => Dtype::Bf16,
        Some("float32") => Dtype::F32,
        Some(other) => return Err(r.unsupported("torch_dtype", &json!(other), "use bfloat16, float16 or float32")),
    };
    r.get("dtype");
    let fp8 = match r.get("quantization_config") {
        None => None,
        Some(q) => Some(import_fp8(&r, q)?),
    };
    let mut spec = Spec {
        name: name.to_string(),
        vocab_size: r.req_u64("vocab_size")?,
        d_model,
        n_layers,
        max_seq_len,
        tie_embeddings: r.bool("tie_word_embeddings")?.unwrap_or(false),
        init_std: r.f64("initializer_range")?.unwrap_or(0.02),
        norm: Norm::Rmsnorm { eps: r.f64("rms_norm_eps")?.unwrap_or(1e-6) },
        dense,
        attention: Attention { mla, swa: None, pattern: vec![LayerAttention::Mla] },
        moe,
        mtp: (mtp_depth > 0).then_some(Mtp { depth: mtp_depth, loss_weight: 0.3 }),
        precision: Precision { master: Dtype::F32, param, compute: param, fp8, kv_cache: KvCacheDtype::Bf16 },
    };
    if let Some(k) = obj.keys().find(|k| !r.used.contains(k.as_str())) {
        return Err(r.unsupported(
            k,
            &obj[k.as_str()],
            "not a DeepseekV3 config key dsv3c knows; remove it if it has no effect on the model",
        ));
    }
    if let Some(x) = extras {
        apply_extras(&mut spec, &x).map_err(|reason| HfError::Unsupported {
            field: "dsv3c".into(),
            value: x.to_string(),
            reason,
            line: r.line("dsv3c"),
        })?;
    }
    Ok(spec)
}

fn import_fp8(r: &Reader<'_>, q: &Value) -> Result<Fp8, HfError> {
    let bad = |why: &str| r.unsupported("quantization_config", q, why.to_string());
    let o = q.as_object().ok_or_else(|| bad("expected an object"))?;
    if o.get("quant_method").and_then(Value::as_str) != Some("fp8") {
        return Err(bad("only quant_method fp8 is supported"));
    }
    if o.get("fmt").and_then(Value::as_str).is_some_and(|f| f != "e4m3") {
        return Err(bad("only fmt e4m3 is supported"));
    }
    if o.get("activation_scheme").and_then(Value::as_str).is_some_and(|f| f != "dynamic") {
        return Err(bad("only dynamic (online) activation scales are supported"));
    }
    let block = match o.get("weight_block_size") {
        None => 128,
        Some(b) => match b.as_array().map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>()) {
            Some(v) if v.len() == 2 && v[0].is_some() && v[0] == v[1] => v[0].unwrap_or(128),
            _ => return Err(bad("weight_block_size must be a square block [n, n]")),
        },
    };
    Ok(Fp8 { format: Fp8Format::E4m3, activation_tile: block, weight_block: block })
}

/// Settings HF has no key for, kept under `dsv3c` in exported configs.
fn extras(s: &Spec) -> Value {
    let mut x = json!({
        "name": s.name,
        "precision": serde_json::to_value(&s.precision).unwrap_or(Value::Null),
    });
    if let Some(m) = &s.moe {
        x["bias_update_speed"] = json!(m.bias_update_speed);
    }
    if let Some(m) = &s.mtp {
        x["mtp_loss_weight"] = json!(m.loss_weight);
    }
    x
}

fn apply_extras(s: &mut Spec, x: &Value) -> Result<(), String> {
    let o = x.as_object().ok_or("expected an object")?;
    for (k, v) in o {
        match k.as_str() {
            "name" => {}
            "precision" => s.precision = serde_json::from_value(v.clone()).map_err(|e| format!("precision: {e}"))?,
            "bias_update_speed" => {
                if let (Some(m), Some(f)) = (s.moe.as_mut(), v.as_f64()) {
                    m.bias_update_speed = f;
                }
            }
            "mtp_loss_weight" => {
                if let (Some(m), Some(f)) = (s.mtp.as_mut(), v.as_f64()) {
                    m.loss_weight = f;
                }
            }
            other => return Err(format!("unknown key `{other}`")),
        }
    }
    Ok(())
}

/// Exports a spec as a Hugging Face DeepseekV3 `config.json` (as a JSON value).
pub fn export(s: &Spec) -> Result<Value, HfError> {
    let Norm::Rmsnorm { eps } = s.norm else {
        return Err(HfError::NotExportable {
            field: "norm",
            reason: "DeepseekV3 only has RMSNorm (this spec uses DynamicTanh)".into(),
        });
    };
    if s.attention.swa.is_some() || s.attention.pattern.contains(&LayerAttention::Swa) {
        return Err(HfError::NotExportable {
            field: "attention.swa",
            reason: "DeepseekV3 has no sliding-window layers".into(),
        });
    }
    let m = &s.attention.mla;
    let mut c = json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": s.vocab_size,
        "hidden_size": s.d_model,
        "num_hidden_layers": s.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.n_heads,
        "q_lora_rank": if m.q_lora_rank == 0 { Value::Null } else { json!(m.q_lora_rank) },
        "kv_lora_rank": m.kv_lora_rank,
        "qk_nope_head_dim": m.qk_nope_head_dim,
        "qk_rope_head_dim": m.qk_rope_head_dim,
        "v_head_dim": m.v_head_dim,
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "max_position_embeddings": s.max_seq_len,
        "rope_theta": m.rope_theta,
        "rope_interleave": true,
        "rms_norm_eps": eps,
        "initializer_range": s.init_std,
        "tie_word_embeddings": s.tie_embeddings,
        "num_nextn_predict_layers": s.mtp_depth(),
        "torch_dtype": match s.precision.param { Dtype::Bf16 => "bfloat16", Dtype::F32 => "float32" },
        "use_cache": true,
        "bos_token_id": 0,
        "eos_token_id": 1,
    });
    c["rope_scaling"] = match &m.yarn {
        None => Value::Null,
        Some(y) => json!({
            "type": "yarn",
            "factor": y.factor,
            "original_max_position_embeddings": y.original_max_position_embeddings,
            "beta_fast": y.beta_fast,
            "beta_slow": y.beta_slow,
            "mscale": y.mscale,
            "mscale_all_dim": y.mscale_all_dim,
        }),
    };
    match &s.moe {
        Some(e) => {
            c["first_k_dense_replace"] = json!(s.n_dense_layers());
            if let Some(d) = &s.dense {
                c["intermediate_size"] = json!(d.intermediate_size);
            }
            c["moe_layer_freq"] = json!(1);
            c["n_routed_experts"] = json!(e.n_routed_experts);
            c["n_shared_experts"] = json!(e.n_shared_experts);
            c["num_experts_per_tok"] = json!(e.top_k);
            c["moe_intermediate_size"] = json!(e.moe_intermediate_size);
            c["n_group"] = json!(e.n_group);
            c["topk_group"] = json!(e.top_groups);
            c["topk_method"] = json!(if e.bias_update_speed > 0.0 || e.score_func == ScoreFunc::Sigmoid {
                "noaux_tc"
            } else {
                "greedy"
            });
            c["scoring_func"] = json!(match e.score_func {
                ScoreFunc::Sigmoid => "sigmoid",
                ScoreFunc::Softmax => "softmax",
            });
            c["routed_scaling_factor"] = json!(e.route_scale);
            c["norm_topk_prob"] = json!(e.norm_topk_prob);
            c["aux_loss_alpha"] = json!(e.seq_aux_alpha);
            c["seq_aux"] = json!(true);
        }
        None => {
            c["first_k_dense_replace"] = json!(s.n_layers);
            c["intermediate_size"] = json!(s.dense.as_ref().map_or(0, |d| d.intermediate_size));
        }
    }
    if let Some(f) = &s.precision.fp8 {
        c["quantization_config"] = json!({
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": [f.weight_block, f.weight_block],
        });
    }
    c["dsv3c"] = extras(s);
    Ok(c)
}

/// Exports a spec as pretty-printed `config.json` text.
pub fn export_text(s: &Spec) -> Result<String, HfError> {
    let v = export(s)?;
    Ok(serde_json::to_string_pretty(&v).map_err(|e| HfError::Json(e.to_string()))? + "\n")
}
