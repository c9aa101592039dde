//! A node's ractor_cluster server: the listener other nodes connect to, authenticated by
//! the cookie, and the session events a node acts on.

use std::net::SocketAddr;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::sync::mpsc;

use crate::{ClusterError, NodeTls};

/// The process-group scope herdsman's remote actors join.
pub const SCOPE: &str = "herdsman";
/// The group the coordinator joins.
pub const COORDINATOR_GROUP: &str = "coordinator";

/// A session event, as a node acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A peer authenticated (its name, `node@host`).
    Authenticated(String),
    /// A session ended; `authenticated` says whether it ever got that far (a session
    /// that did not was refused: a wrong cookie on one side).
    Closed {
        /// The peer's address.
        peer: String,
        /// It had authenticated.
        authenticated: bool,
    },
}

struct Events {
    tx: mpsc::UnboundedSender<SessionEvent>,
    authenticated: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let authenticated = self
            .authenticated
            .lock()
            .map(|mut s| s.remove(&ses.node_id))
            .unwrap_or(false);
        let _ = self.tx.send(SessionEvent::Closed {
            peer: ses.peer_addr,
            authenticated,
        });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut s) = self.authenticated.lock() {
            s.insert(ses.node_id);
        }
        let name = ses.peer_name.map(|n| n.name).unwrap_or_default();
        let _ = self.tx.send(SessionEvent::Authenticated(name));
    }
}

/// Start this node's server on `listen` with `cookie`, accepting only TLS sessions when
/// `tls` is given; its session events arrive on the returned receiver.
///
/// # Errors
/// [`ClusterError::Listen`] when the address cannot be bound.
pub async fn start_node_server(
    name: &str,
    listen: SocketAddr,
    cookie: String,
    tls: Option<&NodeTls>,
) -> Result<
    (
        ActorRef<NodeServerMessage>,
        mpsc::UnboundedReceiver<SessionEvent>,
    ),
    ClusterError,
> {
    let server = NodeServer::new(
        listen.port(),
        cookie,
        name.to_string(),
        listen.ip().to_string(),
        tls.map(|t| IncomingEncryptionMode::Tls(t.acceptor())),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Listen {
            addr: listen.to_string(),
            why: e.to_string(),
        })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events {
        tx,
        authenticated: std::sync::Mutex::new(Default::default()),
    };
    let _ = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "herdsman".into(),
        subscription: Box::new(events),
    });
    Ok((server, rx))
}
