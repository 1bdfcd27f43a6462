//! dsv3c-macros: `model!("spec/tiny.yaml")` expands, at build time, into the training graph that
//! `dsv3c compile` writes as `graph.rs` — the same text, parsed, less its file header — so a crate can embed a model
//! with no build script. Options: `model!("spec/tiny.yaml", batch = 8, seq = 64)` (defaults:
//! batch 1, seq min(4096, max_seq_len)).
//!
//! The path is relative to the calling crate's manifest directory (falling back to the calling
//! file's directory). Cargo rebuilds the crate when the spec changes. A spec error becomes a
//! compile error at the macro call, carrying the spec's file:line:column. The expansion uses
//! `dsv3c_runtime`, which the calling crate must depend on.

use std::path::PathBuf;

use proc_macro::TokenStream;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitInt, LitStr, Token};

struct Input {
    path: LitStr,
    batch: Option<usize>,
    seq: Option<usize>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let path: LitStr = input.parse()?;
        let (mut batch, mut seq) = (None, None);
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: LitInt = input.parse()?;
            let v = value.base10_parse::<usize>()?;
            match key.to_string().as_str() {
                "batch" => batch = Some(v),
                "seq" => seq = Some(v),
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown option `{other}`: use batch = N, seq = N"),
                    ))
                }
            }
        }
        Ok(Input { path, batch, seq })
    }
}

fn expand(input: Input) -> Result<proc_macro2::TokenStream, syn::Error> {
    let err = |msg: String| syn::Error::new(input.path.span(), msg);
    let rel = PathBuf::from(input.path.value());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let mut path = manifest.join(&rel);
    if !path.exists() {
        if let Some(dir) = proc_macro::Span::call_site().local_file().and_then(|f| f.parent().map(PathBuf::from)) {
            let beside = dir.join(&rel);
            if beside.exists() || dir.is_absolute() {
                path = beside;
            }
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read spec {}: {e}", path.display())))?;
    let shown = path.strip_prefix(&manifest).unwrap_or(&path).display().to_string();
    let spec = dsv3c_spec::parse(&shown, &text).map_err(|e| err(e.to_string()))?;
    let seq = input.seq.unwrap_or(spec.max_seq_len.min(4096) as usize);
    let program = dsv3c_codegen::compile(&spec, input.batch.unwrap_or(1), seq).map_err(|e| err(e.to_string()))?;
    let source = dsv3c_codegen::rust::body(&program, &text).map_err(|e| err(e.to_string()))?;
    let items: proc_macro2::TokenStream =
        source.parse().map_err(|e| err(format!("generated Rust does not lex: {e}")))?;
    let abs = path.canonicalize().unwrap_or(path).display().to_string();
    Ok(quote::quote! {
        // Rebuild when the spec changes.
        const _: &[u8] = include_bytes!(#abs);
        #items
    })
}

/// Expands a spec into its training graph module items. See the crate docs.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as Input);
    match expand(input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
