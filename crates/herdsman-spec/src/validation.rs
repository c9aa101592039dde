//! Validation: raw serde types → validated domain types, collecting every problem.
//!
//! Each field is parsed from its text; a bad value is recorded as an [`Issue`] under its
//! dotted path and replaced by its default so that checking goes on. The deployment is
//! returned only when no issue was found. This file holds the issue collector, the
//! deployment-level checks and the checks across services (references, cycles); the
//! per-service checks are in `service.rs`, `health.rs` and `init.rs`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::keywords::{one_of, Vocabulary};
use crate::location::{child, item, Pos};
use crate::model::{Deployment, Service};
use crate::raw::{RawRead, Scalar};
use crate::service;
use crate::values;

/// One problem, before it is located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub(crate) path: String,
    pub(crate) message: String,
    /// Which position of `path` the problem is about.
    pub(crate) anchor: Anchor,
}

/// Which position of an issue's path to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The value (or the nearest ancestor, for a field that is absent).
    Value,
    /// The key: the problem is the name itself.
    Key,
    /// The second occurrence of a key given twice.
    Duplicate,
    /// A position known exactly (from serde_yaml).
    At(Pos),
}

/// The issues found so far, with helpers that parse a field or record why not.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    pub(crate) list: Vec<Issue>,
}

impl Issues {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.add_at(path, message, Anchor::Value);
    }

    pub(crate) fn add_at(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        anchor: Anchor,
    ) {
        self.list.push(Issue {
            path: path.into(),
            message: message.into(),
            anchor,
        });
    }

    /// The value, or `None` after recording the error under `path`.
    pub(crate) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.add(path, message);
                None
            }
        }
    }

    /// A required field: `None` after recording that it is missing.
    pub(crate) fn required<'a, T>(
        &mut self,
        path: &str,
        raw: Option<&'a T>,
        expected: &str,
    ) -> Option<&'a T> {
        if raw.is_none() {
            self.add(path, format!("missing (expected {expected})"));
        }
        raw
    }

    /// Record a field that is present but does not apply in this context.
    pub(crate) fn not_allowed<T>(
        &mut self,
        path: &str,
        raw: Option<&T>,
        context: &str,
        expected: &[&str],
    ) {
        if raw.is_some() {
            let expected = if expected.is_empty() {
                "no other field".to_string()
            } else {
                one_of(expected)
            };
            self.add_at(
                path,
                format!("not allowed with {context} (expected {expected})"),
                Anchor::Key,
            );
        }
    }

    pub(crate) fn duration(
        &mut self,
        path: &str,
        raw: Option<&Scalar>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        raw.and_then(|s| self.check(path, values::duration(s.as_str(), zero_ok)))
            .unwrap_or(default)
    }

    pub(crate) fn integer(
        &mut self,
        path: &str,
        raw: Option<&Scalar>,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        raw.and_then(|s| self.check(path, values::integer(s.as_str(), min, max)))
            .unwrap_or(default)
    }

    pub(crate) fn number(
        &mut self,
        path: &str,
        raw: Option<&Scalar>,
        default: f64,
        min: f64,
        max: Option<f64>,
    ) -> f64 {
        raw.and_then(|s| self.check(path, values::number(s.as_str(), min, max)))
            .unwrap_or(default)
    }

    pub(crate) fn keyword<T: Copy + PartialEq>(
        &mut self,
        path: &str,
        raw: Option<&Scalar>,
        vocabulary: &Vocabulary<T>,
        default: T,
    ) -> T {
        raw.and_then(|s| self.check(path, vocabulary.parse(s.as_str())))
            .unwrap_or(default)
    }
}

/// Validate a read document. `base_dir` must be absolute: relative `workdir`s are
/// resolved against it.
pub(crate) fn validate(read: &RawRead, base_dir: &Path) -> Result<Deployment, Vec<Issue>> {
    let mut issues = Issues::default();
    let doc = &read.doc;
    let mut name = String::new();
    if read.top_read {
        match &doc.version {
            None => issues.add("version", "missing (expected v1)"),
            Some(v) if v.as_str() != "v1" => issues.add(
                "version",
                format!("unsupported version \"{}\" (expected v1)", v.as_str()),
            ),
            Some(_) => {}
        }
        match &doc.deployment {
            None => issues.add(
                "deployment",
                "missing (expected the deployment name, e.g. deployment: shop)",
            ),
            Some(d) => {
                issues.check("deployment", values::dns_label(d.as_str()));
                name = d.as_str().to_string();
            }
        }
    }

    let entries = match &doc.services {
        None => {
            // Absent, or the document could not be read far enough to tell.
            if read.top_read {
                issues.add(
                    "services",
                    "missing (expected a map of service name to service)",
                );
            }
            &[][..]
        }
        Some(entries) => {
            if entries.is_empty() {
                issues.add("services", "no services (expected at least one)");
            }
            entries.as_slice()
        }
    };

    let mut names: HashSet<&str> = HashSet::new();
    for e in entries {
        let path = child("services", e.name.as_str());
        if !names.insert(e.name.as_str()) {
            issues.add_at(
                path.as_str(),
                format!(
                    "duplicate service \"{}\" (expected each name once)",
                    e.name.as_str()
                ),
                Anchor::Duplicate,
            );
        } else if let Err(m) = values::dns_label(e.name.as_str()) {
            issues.add_at(path.as_str(), m, Anchor::Key);
        }
    }

    let mut built: Vec<(Service, Vec<usize>)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for e in entries {
        let Some(raw) = &e.service else { continue };
        if !seen.insert(e.name.as_str()) {
            continue;
        }
        built.push(service::service(
            &mut issues,
            e.name.as_str(),
            raw,
            base_dir,
        ));
    }

    dependencies(&mut issues, &built, &names);

    if issues.list.is_empty() {
        Ok(Deployment {
            name,
            services: built.into_iter().map(|(s, _)| s).collect(),
        })
    } else {
        Err(issues.list)
    }
}

/// References between services: each dependency names another, known service, once;
/// no cycles. `raw_index[i]` is the position in the YAML list of `depends[i]`.
fn dependencies(issues: &mut Issues, built: &[(Service, Vec<usize>)], names: &HashSet<&str>) {
    let mut all: Vec<&str> = names.iter().copied().collect();
    all.sort_unstable();
    // The names offered as alternatives: all of them for a small deployment, a few and a
    // count for a large one (a message per bad dependency must not list thousands).
    const LISTED: usize = 10;
    let shown: Vec<&str> = all.iter().copied().take(LISTED + 1).collect();
    for (s, raw_index) in built {
        let mut listed: HashSet<&str> = HashSet::new();
        for (d, &i) in s.depends.iter().zip(raw_index) {
            let path = child(
                &item(&child(&child("services", &s.name), "depends"), i),
                "service",
            );
            let target = d.service.as_str();
            if target == s.name {
                issues.add(
                    path,
                    format!("service \"{target}\" depends on itself (expected another service)"),
                );
            } else if !names.contains(target) {
                let others: Vec<&str> = shown
                    .iter()
                    .copied()
                    .filter(|n| *n != s.name)
                    .take(LISTED)
                    .collect();
                let expected = if others.is_empty() {
                    "another service of this deployment".to_string()
                } else if all.len() - 1 > others.len() {
                    format!(
                        "one of the {} other services, such as {}",
                        all.len() - 1,
                        others.join(", ")
                    )
                } else {
                    one_of(&others)
                };
                issues.add(
                    path,
                    format!("unknown service \"{target}\" (expected {expected})"),
                );
            } else if !listed.insert(target) {
                issues.add(
                    path,
                    format!("\"{target}\" is listed twice (expected each dependency once)"),
                );
            }
        }
    }
    cycles(issues, built);
}

/// Report each dependency cycle once, at the dependency that closes it.
fn cycles(issues: &mut Issues, built: &[(Service, Vec<usize>)]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let indexes: HashMap<&str, usize> = built
        .iter()
        .enumerate()
        // Reversed, so that a name given twice maps to its first service.
        .rev()
        .map(|(i, (s, _))| (s.name.as_str(), i))
        .collect();
    let index_of = |name: &str| indexes.get(name).copied();
    let mut mark = vec![Mark::New; built.len()];
    for start in 0..built.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (service, next dependency to look at).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some(top) = stack.last_mut() {
            let (node, k) = *top;
            top.1 += 1;
            let (service, raw_index) = &built[node];
            let Some(dep) = service.depends.get(k) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            let Some(target) = index_of(&dep.service) else {
                continue;
            };
            if target == node {
                continue; // reported as a self-dependency
            }
            match mark[target] {
                Mark::New => {
                    mark[target] = Mark::Open;
                    stack.push((target, 0));
                }
                Mark::Open => {
                    let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut names: Vec<&str> = stack[from..]
                        .iter()
                        .map(|(n, _)| built[*n].0.name.as_str())
                        .collect();
                    names.push(built[target].0.name.as_str());
                    let at = raw_index.get(k).copied().unwrap_or(k);
                    let path = child(
                        &item(&child(&child("services", &service.name), "depends"), at),
                        "service",
                    );
                    issues.add(
                        path,
                        format!(
                            "dependency cycle {} (expected no cycles)",
                            names.join(" -> ")
                        ),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}
