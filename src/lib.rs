//! herdsman: an actor-model supervision runtime for containerized workloads.
//!
//! This facade re-exports the crates that make up herdsman.
pub use herdsman_core as core;
pub use herdsman_probe as probe;
pub use herdsman_runtime as runtime;
pub use herdsman_spec as spec;
