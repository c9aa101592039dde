//! The crate's one error type, and [`Problem`]: one located, actionable line per mistake.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing wrong with a spec, located in its file.
///
/// Displays as `FILE:LINE:COLUMN: dotted.path: what is wrong (what was expected)`, e.g.
/// `shop.yaml:14:15: services.api.health.check.type: unknown check type "exec" (expected
/// tcp, http or command)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field, sequence items as `[i]`: `services.api.endpoints[0].port`.
    /// `<document>` when the problem is the document as a whole (e.g. a YAML syntax error
    /// before any field).
    pub path: String,
    /// What is wrong, and in parentheses what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.path, self.message
        )
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read. Retrying can help once the cause is fixed (the file is
    /// created, its permissions are changed); the spec itself was not looked at.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The spec is invalid. Retrying cannot help: the file must be fixed. Every problem
    /// found is listed, sorted by position; the message prints them one per line.
    #[error("invalid deployment spec ({}):{}", count(problems.len()), lines(problems))]
    Invalid {
        /// Every problem found, sorted by line and column.
        problems: Vec<Problem>,
    },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".to_string()
    } else {
        format!("{n} problems")
    }
}

fn lines(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n{p}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_displays_as_one_located_line() {
        let p = Problem {
            file: "shop.yaml".into(),
            line: 14,
            column: 15,
            path: "services.api.health.check.type".into(),
            message: "unknown check type \"exec\" (expected tcp, http or command)".into(),
        };
        assert_eq!(
            p.to_string(),
            "shop.yaml:14:15: services.api.health.check.type: unknown check type \"exec\" (expected tcp, http or command)"
        );
    }

    #[test]
    fn invalid_error_lists_every_problem_on_its_own_line() {
        let p = |line| Problem {
            file: "a.yaml".into(),
            line,
            column: 1,
            path: "version".into(),
            message: "bad".into(),
        };
        let e = SpecError::Invalid {
            problems: vec![p(1), p(2)],
        };
        assert_eq!(
            e.to_string(),
            "invalid deployment spec (2 problems):\na.yaml:1:1: version: bad\na.yaml:2:1: version: bad"
        );
    }
}
