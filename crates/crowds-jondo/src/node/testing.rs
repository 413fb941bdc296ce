//! Test helpers: nodes in signed crowds of a chosen shape, at a fixed time.

use super::{Node, NodeSettings};
use crate::exit::ExitConfig;
use crowds_proto::document::{CrowdDocument, Member, FLAG_CLIENT_ONLY};
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::SecretKey;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The time the helpers' nodes start at, unix ms.
pub(crate) const STARTED_AT: u64 = 1_700_000_000_000;

/// The shape of a test crowd.
pub(crate) struct Shape {
    /// Members listed, this jondo included (0: no document at all).
    pub members: u64,
    /// Of which client-only (this jondo first, if `me_client_only`, then the last ones).
    pub client_only: u64,
    /// Whether this jondo is client-only.
    pub me_client_only: bool,
    /// The crowd's pf.
    pub pf: f64,
    /// Whether the node adopts a pf <= 1/2.
    pub allow_low_pf: bool,
}

/// A node started at [`STARTED_AT`] that was offered a crowd of `shape` one minute
/// later (adopted unless its pf is refused), with distinct values in every counter.
pub(crate) fn node_in(shape: &Shape) -> Node {
    let me = SecretKey::generate().expect("key");
    let blender = SecretKey::generate().expect("key");
    let node = Node::new(NodeSettings {
        identity: Arc::new(me),
        blender_key: blender.public(),
        exit: ExitConfig::default(),
        heartbeat_interval: Duration::from_secs(5),
        poll_interval: Duration::from_secs(1),
        follow_blender_intervals: false,
        proxy_addr: "127.0.0.1:8118".parse().expect("address"),
        hygiene: Hygiene {
            strip_cookies: true,
        },
        prefetch: true,
        strip_active_content: false,
        optimistic_tunnels: true,
        insecure_allow_low_pf: shape.allow_low_pf,
        started_at: STARTED_AT,
    });
    let s = &node.stats;
    let counters = [
        &s.initiated,
        &s.relayed,
        &s.submitted,
        &s.path_failures,
        &s.retries,
        &s.own_path_reforms,
        &s.client_failures,
        &s.served_from_bundles,
        &s.bundle_objects_undelivered,
        &s.plain_http_in_tunnels,
        &s.handshakes_ok,
        &s.handshakes_refused,
        &s.peer_refused_per_address,
        &s.peer_handshakes_evicted,
        &s.document_fetches,
        &s.bytes_to_user,
        &s.bytes_from_servers,
        &s.documents_full,
        &s.documents_delta,
    ];
    // Counters added later come after the errors, so the older ones keep their values.
    let later = [&s.tunnels_initiated];
    for (i, c) in counters
        .into_iter()
        .chain(&s.errors)
        .chain(later)
        .enumerate()
    {
        c.store(100 + i as u64, Ordering::Relaxed);
    }
    if shape.members == 0 {
        return node;
    }
    let members = (1..=shape.members)
        .map(|id| {
            let key = if id == 1 {
                node.me
            } else {
                SecretKey::generate().expect("key").public()
            };
            let client_only = if id == 1 {
                shape.me_client_only
            } else {
                id > shape.members - shape.client_only + u64::from(shape.me_client_only)
            };
            Member {
                id,
                addr: format!("127.0.0.{}:7000", id % 250 + 1)
                    .parse()
                    .expect("address"),
                key,
                flags: if client_only { FLAG_CLIENT_ONLY } else { 0 },
            }
        })
        .collect();
    let doc = CrowdDocument {
        crowd: "test".into(),
        epoch: 7,
        forward_probability: shape.pf,
        issued_at: STARTED_AT,
        expires_at: STARTED_AT + 3_600_000,
        members,
    };
    let bytes = doc.sign(&blender).expect("sign");
    let _ = node.adopt(&bytes, STARTED_AT + 60_000);
    node
}
