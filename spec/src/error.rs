//! Errors of the spec language: every problem carries the file, line and column of the field it
//! is about, and says what would be valid. Rendered by the CLI through miette.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

use crate::locate::Pos;
use crate::validate::Rule;

/// What kind of problem a spec has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The text is not YAML.
    Syntax,
    /// The YAML does not have the spec's shape: unknown or missing field, wrong type or variant.
    Shape,
    /// The values break a rule the compiler relies on.
    Invalid(Rule),
}

/// One located problem in a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Dotted path of the field (`moe.top_k`), empty when unknown.
    pub path: String,
    pub pos: Pos,
    pub message: String,
    /// What would be valid.
    pub help: Option<String>,
}

impl Problem {
    /// The validation rule broken, if this is a validation problem.
    pub fn rule(&self) -> Option<Rule> {
        match self.kind {
            ProblemKind::Invalid(r) => Some(r),
            _ => None,
        }
    }
}

/// A spec that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Problems(.0))]
    Problems(Box<ProblemSet>),
}

/// The problems found in one spec file, with its text for rendering.
#[derive(Debug)]
pub struct ProblemSet {
    pub file: String,
    pub src: String,
    pub problems: Vec<Problem>,
    named: NamedSource<String>,
}

impl ProblemSet {
    pub fn new(file: &str, src: &str, problems: Vec<Problem>) -> Self {
        ProblemSet {
            file: file.to_string(),
            src: src.to_string(),
            problems,
            named: NamedSource::new(file, src.to_string()).with_language("yaml"),
        }
    }
}

impl SpecError {
    /// The located problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Io { .. } => &[],
            SpecError::Problems(p) => &p.problems,
        }
    }
}

struct Problems<'a>(&'a ProblemSet);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0;
        if set.problems.len() > 1 {
            writeln!(f, "{} problems in spec `{}`:", set.problems.len(), set.file)?;
        }
        for (i, p) in set.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", set.file, p.pos.line, p.pos.column, p.message)?;
        }
        Ok(())
    }
}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self {
            SpecError::Io { .. } => Some(Box::new("dsv3c::spec::io")),
            SpecError::Problems(set) => {
                let first = set.problems.first()?;
                Some(Box::new(match first.kind {
                    ProblemKind::Syntax => "dsv3c::spec::syntax".to_string(),
                    ProblemKind::Shape => "dsv3c::spec::shape".to_string(),
                    ProblemKind::Invalid(r) => format!("dsv3c::spec::{}", r.code()),
                }))
            }
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let SpecError::Problems(set) = self else {
            return None;
        };
        let helps: Vec<String> = set
            .problems
            .iter()
            .filter_map(|p| {
                p.help.as_ref().map(|h| format!("{}: {h}", if p.path.is_empty() { "spec" } else { &p.path }))
            })
            .collect();
        (!helps.is_empty()).then(|| Box::new(helps.join("\n")) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match self {
            SpecError::Problems(set) => Some(&set.named as &dyn miette::SourceCode),
            SpecError::Io { .. } => None,
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let SpecError::Problems(set) = self else {
            return None;
        };
        Some(Box::new(set.problems.iter().map(move |p| {
            let off = p.pos.offset(&set.src);
            let len = set.src[off..].find([':', '\n', ',']).unwrap_or(0).max(1);
            let len = len.min(set.src.len() - off);
            let label = match p.kind {
                ProblemKind::Invalid(r) => r.code().to_string(),
                ProblemKind::Shape => "here".to_string(),
                ProblemKind::Syntax => "syntax".to_string(),
            };
            LabeledSpan::new_with_span(Some(label), SourceSpan::new(off.into(), len))
        })))
    }
}
