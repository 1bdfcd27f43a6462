//! Loading a spec: YAML text -> typed [`Spec`] -> validated, with every problem located.

use std::path::Path;

use crate::error::{Problem, ProblemKind, ProblemSet, SpecError};
use crate::locate::{locate, parse_path, Pos};
use crate::types::Spec;
use crate::validate::validate;

/// Reads and validates the spec at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
    let path = path.as_ref();
    let src =
        std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: path.display().to_string(), source })?;
    parse(&path.display().to_string(), &src)
}

/// Parses and validates spec text; `file` names it in errors.
pub fn parse(file: &str, src: &str) -> Result<Spec, SpecError> {
    let spec = parse_unvalidated(file, src)?;
    let problems: Vec<Problem> = validate(&spec)
        .into_iter()
        .map(|v| {
            let (pos, _) = locate(src, &parse_path(&v.path));
            Problem { kind: ProblemKind::Invalid(v.rule), path: v.path, pos, message: v.message, help: Some(v.help) }
        })
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(SpecError::Problems(Box::new(ProblemSet::new(file, src, problems))))
    }
}

/// The error for YAML nested deeper than serde_yaml can read (see [`crate::yaml`]).
pub(crate) fn too_deep(file: &str, src: &str, (line, column): (usize, usize)) -> SpecError {
    let message = format!("brackets nested more than {} deep", crate::yaml::MAX_DEPTH);
    SpecError::Problems(Box::new(ProblemSet::new(
        file,
        src,
        vec![Problem {
            kind: ProblemKind::Syntax,
            path: String::new(),
            pos: Pos { line, column },
            message,
            help: Some("no spec or recipe nests lists or maps that deep".into()),
        }],
    )))
}

/// Parses spec text into its typed form without checking the rules.
pub fn parse_unvalidated(file: &str, src: &str) -> Result<Spec, SpecError> {
    if let Some(pos) = crate::yaml::too_deep(src) {
        return Err(too_deep(file, src, pos));
    }
    serde_yaml::from_str::<Spec>(src).map_err(|shape_err| {
        // serde_yaml streams: broken syntax can surface as a type error first. Report the
        // syntax error when there is one.
        let (kind, e) = match serde_yaml::from_str::<serde_yaml::Value>(src) {
            Err(syntax_err) => (ProblemKind::Syntax, syntax_err),
            Ok(_) => (ProblemKind::Shape, shape_err),
        };
        let (path, message) = split_yaml_message(&e.to_string());
        let reported = e.location().map(|l| Pos { line: l.line().max(1), column: l.column().max(1) });
        // A problem inside a field cannot lie before the field itself; serde_yaml's mark can,
        // for errors raised after a mapping was read. Fall back to the field's own position.
        let (field_pos, found) = locate(src, &parse_path(&path));
        let pos = match reported {
            Some(p) if !found || p >= field_pos => p,
            _ => field_pos,
        };
        let help = match kind {
            ProblemKind::Syntax => "fix the YAML syntax (indentation, `key: value`, matching brackets)",
            _ if message.contains("unknown field") => {
                "remove the field or fix its spelling; README.md lists every spec field"
            }
            _ if message.contains("missing field") => "add the field; README.md lists every spec field",
            _ => "README.md lists every spec field with its type",
        };
        SpecError::Problems(Box::new(ProblemSet::new(
            file,
            src,
            vec![Problem { kind, path, pos, message, help: Some(help.to_string()) }],
        )))
    })
}

/// Splits serde_yaml's "path: message at line L column C" into the path and the bare message.
fn split_yaml_message(msg: &str) -> (String, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => &msg[..i],
        _ => msg,
    };
    // serde_yaml prefixes the field path ("moe.top_k: invalid type ...") when it knows it.
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c)) {
            return (head.to_string(), format!("{head}: {rest}"));
        }
    }
    (String::new(), msg.to_string())
}

impl Spec {
    /// The spec as YAML text (round-trips through [`parse`]).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a spec always serializes")
    }
}
