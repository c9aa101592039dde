//! A node's ractor_cluster server: the listener other nodes connect to, authenticated by
//! the cookie (and, with TLS, by certificates), and the session events a node acts on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NetworkStream, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::{ClusterError, NodeTls};

/// The process-group scope herdsman's remote actors join.
pub const SCOPE: &str = "herdsman";
/// The group the coordinator joins.
pub const COORDINATOR_GROUP: &str = "coordinator";

/// How long an incoming connection has to complete its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a connection beyond them is closed at once.
const MAX_HANDSHAKES: usize = 64;

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
    /// An incoming connection never became a session: its TLS handshake failed or
    /// timed out (a peer without TLS, or with a certificate this node does not trust).
    Refused {
        /// The peer's address.
        peer: String,
        /// Why.
        why: String,
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
/// With TLS, herdsman accepts the connections itself and hands each encrypted stream to
/// the node server (as ractor_cluster's own `NetworkStream::TlsServer`): ractor_cluster's
/// listener runs each handshake to completion before it accepts the next connection,
/// with no deadline, so one peer that connects and stays silent would hold up every
/// node that joins after it. Here each handshake runs on its own, within
/// [`HANDSHAKE_DEADLINE`], and a failed one is reported as [`SessionEvent::Refused`]. The
/// node server's own listener then serves only loopback, on a port of its choosing, and
/// also requires TLS.
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
    let fail = |why: String| ClusterError::Listen {
        addr: listen.to_string(),
        why,
    };
    let own_listener = match tls {
        Some(_) => Some(
            TcpListener::bind(listen)
                .await
                .map_err(|e| fail(e.to_string()))?,
        ),
        None => None,
    };
    let (port, bind) = match &own_listener {
        Some(_) => {
            let loopback = if listen.is_ipv6() {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            };
            (0, loopback)
        }
        None => (listen.port(), listen.ip()),
    };
    let server = NodeServer::new(
        port,
        cookie,
        name.to_string(),
        listen.ip().to_string(),
        tls.map(|t| IncomingEncryptionMode::Tls(t.acceptor())),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(bind);
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let (Some(listener), Some(tls)) = (own_listener, tls) {
        tokio::spawn(accept_tls(
            listener,
            tls.acceptor(),
            server.clone(),
            tx.clone(),
        ));
    }
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

/// Accept connections on `listener` until `server` stops, each TLS handshake in a task
/// of its own with a deadline; hand each encrypted stream to `server`.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
    events: mpsc::UnboundedSender<SessionEvent>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let cell = server.get_cell();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: let some close.
                    tracing::warn!(error = %e, "cannot accept a node connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cell.wait(None) => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let _ = events.send(SessionEvent::Refused {
                peer: peer.to_string(),
                why: format!("{MAX_HANDSHAKES} TLS handshakes already in progress"),
            });
            continue;
        };
        let (acceptor, server, events) = (acceptor.clone(), server.clone(), events.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let why = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => {
                    let stream = NetworkStream::TlsServer {
                        peer_addr: peer,
                        local_addr: local,
                        stream,
                    };
                    let _ = server.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(stream),
                        is_server: true,
                    });
                    return;
                }
                Ok(Err(e)) => format!("TLS handshake failed: {e}"),
                Err(_) => format!("no TLS handshake within {}s", HANDSHAKE_DEADLINE.as_secs()),
            };
            let _ = events.send(SessionEvent::Refused {
                peer: peer.to_string(),
                why,
            });
        });
    }
}
