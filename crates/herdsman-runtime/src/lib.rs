//! Container runtimes: the [`Runtime`] trait the actor tree drives, [`ProcessRuntime`]
//! (real OS processes, the default) and [`SimRuntime`] (simulated containers with
//! fault injection, for fleet simulations and deterministic tests).
//!
//! Layout: `runtime` (the trait, container ids, exits), `error` (this crate's error).

mod error;
mod runtime;

pub use error::RuntimeError;
pub use runtime::{
    ContainerId, ContainerSpec, Exit, ExitReason, ExitSender, ExitWatch, Runtime, Started,
};
