//! Building a [`Node`]: the settings the relay engine starts from.
//!
//! Owns the initial state of every field, so the wiring in [`crate::jondo`] hands in
//! settings rather than filling in the node's internals. It must not bind sockets or
//! read configuration files: the wiring has done that.

use super::failed::FailedMembers;
use super::{Node, Recent, Stats};
use crate::exit::ExitConfig;
use crowds_net::link::Links;
use crowds_net::net;
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::path::PathTable;
use crowds_proto::recent::RecentEvents;
use crowds_proto::view::CrowdView;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// What a [`Node`] starts from.
pub struct NodeSettings {
    /// This jondo's identity (its links authenticate with it).
    pub identity: Arc<SecretKey>,
    /// The blender's public key: crowd documents must carry its signature.
    pub blender_key: PublicKey,
    /// How this jondo submits requests as the exit.
    pub exit: ExitConfig,
    /// The heartbeat interval until the blender suggests another.
    pub heartbeat_interval: Duration,
    /// The document poll interval until the blender suggests another.
    pub poll_interval: Duration,
    /// Whether the blender's suggested intervals replace the two above.
    pub follow_blender_intervals: bool,
    /// The local HTTP proxy's bound address (for the PAC file).
    pub proxy_addr: SocketAddr,
    /// Header rules applied to this user's requests.
    pub hygiene: Hygiene,
    /// Ask exits for page bundles (the timing defence).
    pub prefetch: bool,
    /// Remove scripts and plug-ins from plain-HTTP pages.
    pub strip_active_content: bool,
    /// Answer the user's tunnels at once and send their first bytes with the tunnel
    /// request ([`crate::JondoConfig::optimistic_tunnels`]).
    pub optimistic_tunnels: bool,
    /// Adopt crowd documents with pf <= 1/2 (experiments only).
    pub insecure_allow_low_pf: bool,
    /// When this jondo started, unix ms.
    pub started_at: u64,
}

impl Node {
    /// A node holding no crowd yet: it answers "not admitted" until a document listing it
    /// is adopted.
    pub fn new(settings: NodeSettings) -> Self {
        let NodeSettings {
            identity,
            blender_key,
            exit,
            heartbeat_interval,
            poll_interval,
            follow_blender_intervals,
            proxy_addr,
            hygiene,
            prefetch,
            strip_active_content,
            optimistic_tunnels,
            insecure_allow_low_pf,
            started_at,
        } = settings;
        Self {
            me: identity.public(),
            crowd: Arc::new(RwLock::new(None)),
            view: Mutex::new(CrowdView::new(blender_key)),
            paths: Mutex::new(PathTable::new()),
            links: Links::new(identity),
            exit,
            stats: Stats::default(),
            blender_ok: AtomicBool::new(true),
            heartbeat_ms: AtomicU64::new(heartbeat_interval.as_millis() as u64),
            poll_ms: AtomicU64::new(poll_interval.as_millis() as u64),
            follow_hints: follow_blender_intervals,
            started_at,
            refresh: Notify::new(),
            adopted: tokio::sync::watch::channel(0).0,
            in_flight: Arc::default(),
            admitted_since: AtomicU64::new(0),
            admission_expected_at: AtomicU64::new(0),
            proxy_addr,
            hygiene,
            prefetch,
            strip_active_content,
            optimistic_tunnels,
            objects: Arc::default(),
            recent: Mutex::new(Recent {
                own_reforms: RecentEvents::new(RecentEvents::DAY_MS),
                epochs: RecentEvents::new(RecentEvents::DAY_MS),
            }),
            own_path_formed: AtomicBool::new(false),
            failed: Mutex::new(FailedMembers::default()),
            unknown_key_refresh: net::OncePer::default(),
            allow_low_pf: insecure_allow_low_pf,
            refused_pf: Mutex::new(None),
            low_pf_logged: Mutex::new(None),
        }
    }
}
