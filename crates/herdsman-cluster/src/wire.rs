//! The wire protocol between nodes: what an agent reports and what the coordinator
//! assigns, in an explicit, versioned JSON encoding carried by ractor_cluster.
//!
//! Only [`CoordinatorMsg`] crosses the network. Every other actor message in herdsman is
//! local and stays unserializable.

use std::collections::BTreeMap;

use herdsman_core::ReplicaStatus;
use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. A peer on another version is refused: its
/// messages decode as [`Wire::Unreadable`] and are answered with nothing.
pub const PROTOCOL_VERSION: u32 = 1;

/// A payload in the versioned envelope `{"v": 1, "body": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire<T> {
    /// Decoded: the peer speaks this version.
    Known(T),
    /// Not decodable (another version, or garbage): why, for the log.
    Unreadable(String),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u32,
    body: serde_json::Value,
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Wire::Known(body) => serde_json::to_vec(&EnvelopeOut {
                v: PROTOCOL_VERSION,
                body: &body,
            })
            // A plain data type always serializes; an empty frame decodes as unreadable.
            .unwrap_or_default(),
            Wire::Unreadable(_) => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        decode(&bytes)
    }
}

/// Decode an envelope; never panics.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Wire<T> {
    let envelope: EnvelopeIn = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => return Wire::Unreadable(format!("not a herdsman frame: {e}")),
    };
    if envelope.v != PROTOCOL_VERSION {
        return Wire::Unreadable(format!(
            "protocol version {} (this node speaks {PROTOCOL_VERSION})",
            envelope.v
        ));
    }
    match serde_json::from_value(envelope.body) {
        Ok(body) => Wire::Known(body),
        Err(e) => Wire::Unreadable(format!("malformed v{PROTOCOL_VERSION} frame: {e}")),
    }
}

/// The one remote message type: the coordinator's mailbox as agents see it.
///
/// Variants are tagged by name on the wire: never rename one; add new ones instead.
#[derive(RactorClusterMessage)]
pub enum CoordinatorMsg {
    /// An agent's heartbeat and report; answered with the agent's assignment.
    #[rpc]
    Report(Wire<NodeReport>, RpcReplyPort<Wire<Assignment>>),
}

/// A service's replica slots, by global replica index.
pub type Slots = BTreeMap<String, Vec<u32>>;

/// What a node tells the coordinator, with every heartbeat and on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (`--node`).
    pub node: String,
    /// The node's labels (`--labels k=v`).
    pub labels: BTreeMap<String, String>,
    /// The epoch of the assignment the node is running (0: none yet).
    pub epoch: u64,
    /// The deployment the node runs, if any.
    pub deployment: Option<String>,
    /// The slots the node runs.
    pub slots: Slots,
    /// Its replicas, by global index.
    pub rows: Vec<Row>,
    /// The node's own deployment is stable (every replica ready for `min_ready`).
    pub stable: bool,
}

/// One replica as a node reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Its service.
    pub service: String,
    /// The replica, its index global across the cluster.
    pub status: ReplicaStatus,
}

/// What the coordinator tells a node to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node's epoch. A node whose epoch differs stops everything it runs, then takes
    /// this assignment: its old work was given to others while it was lost.
    pub epoch: u64,
    /// The deployment (validated spec) to run, or none yet.
    pub deployment: Option<herdsman_spec::Deployment>,
    /// The slots this node runs.
    pub slots: Slots,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_round_trip_through_bytes() {
        let report = NodeReport {
            node: "a".into(),
            labels: BTreeMap::from([("zone".into(), "1".into())]),
            epoch: 3,
            deployment: Some("shop".into()),
            slots: BTreeMap::from([("web".into(), vec![0, 2])]),
            rows: Vec::new(),
            stable: true,
        };
        let bytes = Wire::Known(report.clone()).into_bytes();
        assert_eq!(Wire::<NodeReport>::from_bytes(bytes), Wire::Known(report));
    }

    #[test]
    fn another_protocol_version_is_unreadable_not_a_panic() {
        let bytes = br#"{"v": 2, "body": {}}"#.to_vec();
        let Wire::<NodeReport>::Unreadable(why) = Wire::from_bytes(bytes) else {
            panic!("a v2 frame decoded as v1");
        };
        assert!(why.contains("version 2"), "{why}");
        let garbage = Wire::<NodeReport>::from_bytes(b"\xff\x00".to_vec());
        assert!(matches!(garbage, Wire::Unreadable(_)));
    }
}
