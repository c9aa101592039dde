//! Several herdsman nodes on `ractor_cluster`: a coordinator places replica slots on
//! itself and on agents, agents run their share and report it, node liveness is a lease.
//!
//! Layout: `wire` (the one remote message and its versioned encoding), `cookie` (the
//! shared secret, from a file), `node_server` (a node's ractor_cluster server and session
//! events) with `session_tls` (mutual TLS for those sessions, from PEM files), `lease` (node liveness, pure), `placement` (which node runs which slot, pure),
//! `cluster_view` (the coordinator's view: leases, epochs, assignments, status), `coordinator`
//! (the actor agents report to, the coordinator's own share), `agent` (an agent's loop),
//! `node_worker` (a node's local deployment of its slots) with `slot_runtime` (global
//! replica indices over a node's runtime), `error`.

mod agent;
mod cluster_view;
mod cookie;
mod coordinator;
mod error;
mod lease;
mod node_server;
mod node_worker;
mod placement;
mod session_tls;
mod slot_runtime;
mod wire;

pub use agent::{run_agent, AgentConfig, AgentNotice, Membership};
pub use cluster_view::{
    ClusterService, ClusterStatus, ClusterView, NodeInfo, NodeReplica, ViewEvent,
};
pub use cookie::read_cookie;
pub use coordinator::{keep_leases, run_local_node, start_coordinator, SharedView, ViewChanges};
pub use error::ClusterError;
pub use lease::{Lease, NodeState, Transition};
pub use node_server::{start_node_server, SessionEvent};
pub use node_worker::NodeWorker;
pub use placement::{place, unplaced, Placement};
pub use session_tls::{server_name, NodeTls, TlsFiles};
pub use slot_runtime::SlotRuntime;
pub use wire::{Assignment, NodeReport, Row, Slots, Wire, PROTOCOL_VERSION};
