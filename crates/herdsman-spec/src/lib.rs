//! The herdsman deployment spec: serde types, YAML parsing, validation. No tokio.
//!
//! Layout: `model` (validated domain types), `template` (per-replica `${...}` variables).

mod model;
mod template;

pub use model::*;
pub use template::{endpoint_var_name, ReplicaVars, Template, TemplateError, TemplateVar};
