//! The herdsman deployment spec: serde types, YAML parsing, validation. No tokio.
//!
//! ```
//! # use std::path::Path;
//! let yaml = "version: v1\ndeployment: shop\nservices:\n  api:\n    command: {entrypoint: [./api]}\n";
//! let d = herdsman_spec::parse_str(yaml, "shop.yaml", Path::new("/srv/shop")).expect("valid");
//! assert_eq!(d.services[0].initial_replicas(), 1);
//! ```
//!
//! Layout: `loader` (`parse_str`, `load`: the pipeline, and serde errors made into
//! problems); `budget` (the bounds on size, nesting and alias expansion, measured on
//! parser events before serde runs); `raw` (serde types: the document's shape, every scalar kept as text);
//! `location` (path → line and column, from yaml-rust2's events); `validation` (the issue
//! collector, deployment-level and cross-service checks) with `service`, `health` and
//! `init` and `update` (per-service checks); `values` (durations, counts, ports, names, templates);
//! `keywords` (enumerated words and their ZLayer aliases); `defaults` (every default, in
//! one place); `emitter` (`to_yaml`); `error` (`SpecError`, `Problem`); `model`
//! (validated domain types); `template` (per-replica `${...}` variables).

mod budget;
mod defaults;
mod emitter;
mod error;
mod health;
mod init;
mod keywords;
mod loader;
mod location;
mod model;
mod raw;
mod service;
mod template;
mod update;
mod validation;
mod values;

pub use budget::{MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_NODES, MAX_SPEC_BYTES};
pub use emitter::to_yaml;
pub use error::{Problem, SpecError};
pub use loader::{load, parse_str};
pub use model::*;
pub use template::{endpoint_var_name, ReplicaVars, Template, TemplateError, TemplateVar};
pub use values::node_name;
