//! The canonical specs, embedded in the binary so that `select` and tests work anywhere.
//! The files themselves live next to the crate: `spec/<name>.yaml`.

use crate::error::SpecError;
use crate::parse::parse;
use crate::types::Spec;

/// (name, file text) of every canonical spec, smallest first.
pub const CANONICAL: [(&str, &str); 9] = [
    ("tiny", include_str!("../tiny.yaml")),
    ("small-fp8", include_str!("../small-fp8.yaml")),
    ("swa-mla-small", include_str!("../swa-mla-small.yaml")),
    ("1b", include_str!("../1b.yaml")),
    ("5b", include_str!("../5b.yaml")),
    ("10b", include_str!("../10b.yaml")),
    ("15b", include_str!("../15b.yaml")),
    ("20b", include_str!("../20b.yaml")),
    ("671b", include_str!("../671b.yaml")),
];

/// The canonical spec called `name`, parsed and validated.
pub fn get(name: &str) -> Option<Spec> {
    CANONICAL.iter().find(|(n, _)| *n == name).map(|(n, src)| parse_canonical(n, src))
}

/// Every canonical spec, smallest first.
pub fn all() -> Vec<Spec> {
    CANONICAL.iter().map(|(n, src)| parse_canonical(n, src)).collect()
}

fn parse_canonical(name: &str, src: &str) -> Spec {
    match parse(&format!("spec/{name}.yaml"), src) {
        Ok(s) => s,
        // The canonical specs are part of the build and are tested; an invalid one is a bug here.
        Err(e) => panic!("canonical spec {name} is invalid: {e}"),
    }
}

/// Parses a canonical spec, reporting problems instead of panicking (for tests).
pub fn try_get(name: &str) -> Option<Result<Spec, SpecError>> {
    CANONICAL.iter().find(|(n, _)| *n == name).map(|(n, src)| parse(&format!("spec/{n}.yaml"), src))
}
