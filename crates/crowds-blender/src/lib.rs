//! The blender daemon: accounts, admission, and the signed crowd document.
//!
//! Owns the blender's HTTPS API (TLS 1.3 with its Ed25519 key as a raw public key,
//! pinned by jondos; every client proves an Ed25519 identity key in the handshake), the
//! epoch ticker that applies [`crowds_proto::roster`] rules, signing, and persistence of
//! each epoch in the [`crate::store`]. Every piece of membership state lives in the store,
//! so several blenders sharing one PostgreSQL database (and one signing key) serve the
//! same crowds: each cuts epochs only under the crowd's lock. It never sees member traffic.
//!
//! Epochs are cut only at scheduled times (multiples of the join interval since the unix
//! epoch) and only when a change is waiting; a member that goes silent keeps its place
//! for the grace period; and while the API turns members' heartbeats away (every member
//! connection slot taken, or the store failing) nobody's silence counts (see
//! [`store::Store::tick_after`]).
//!
//! API (all JSON except the document):
//! - `POST /v1/join` `{"account", "password", "peer_addr"}`: registers the TLS client key
//!   as the account's member key; admitted at the next scheduled epoch. Before listing
//!   the peer address, the blender checks that this key answers there: a TLS handshake
//!   to it must prove the key (else 403); an address it cannot connect to at all makes a
//!   client-only member.
//! - `POST /v1/heartbeat`, `POST /v1/leave`: identified by the TLS client key.
//! - `GET /v1/crowd`: the signed document of the caller's crowd; `GET /v1/crowd/NAME`
//!   names the crowd. `ETag` and `If-None-Match` make an unchanged document a 304
//!   without a body, and a `crowds-have` header may get a delta instead of the whole.
//!
//! # Who may read the member list
//!
//! The document lists every member's address and key: a list of who uses an anonymity
//! tool. Only a client whose TLS key is in that crowd's current document, or that the
//! store lists as a member or pending member of that crowd (its key was registered by a
//! join with the account's password), gets it, whole or as a delta, or even as a 304;
//! anyone else gets 403. Members need the list to route, and a pending member needs it
//! the moment its epoch admits it; nobody else does. A jondo always joins before it
//! fetches, at start-up and again when its heartbeat is refused after it was dropped,
//! so honest jondos never meet the 403. A member of one crowd cannot read another
//! crowd's list. What stays public is only what a TLS handshake shows: that a blender
//! listens here, with this key.
//!
//! # Hostile load
//!
//! Strangers (no account needed) must not be able to empty the crowd or exhaust the
//! blender, so every number here is a setting ([`ApiLimits`]):
//! - Password checks (argon2id, about 19 MiB each) run on a fixed pool of threads with a
//!   short queue ([`crate::store::password`]); beyond it a join gets 503 with
//!   `Retry-After` before any work is done. A login attempt is counted against its
//!   account *before* its check runs, so parallel guesses for one account cannot all
//!   pass the lockout; its source address is checked first and charged for failures
//!   (counting it before would lock out members behind one NAT logging in together; a
//!   wave from one address is bounded by the join rate limit). Account names are
//!   validated before they become throttle keys; the throttle table is bounded.
//! - Connections are sorted as they are accepted. Those from a member's address (one in
//!   a current document, or one a member or pending member's key was recently proven
//!   from) take slots of the members' budget; any other connection is a stranger's:
//!   at most that many are in their TLS handshake (a new one cuts off the one waiting
//!   longest) and at most that many past it. After the handshake the key decides: a
//!   member's key moves the connection to the members' budget, a stranger's key to the
//!   strangers'. Connections not yet proven a member's are capped per source address
//!   (IPv6: per /64). Handshake, request head, request body and the whole connection
//!   each have a timeout, and a connection carries one request.
//! - [`crowds_net::net::Saturation`] records only the members' budget running out. Strangers are
//!   refused at their own budget, which is not saturation, so a flood of strangers
//!   neither pauses members' silence clocks nor keeps members from heartbeating. Either
//!   alternative would hand an attacker something: if strangers' floods counted as
//!   saturation, a flood without end would freeze every silence clock, so dead members
//!   would never be dropped and paths through them would keep failing; if strangers
//!   could take members' slots, the flood would silence members until they were
//!   dropped, and every drop re-forms paths. The members' budget can only be exhausted
//!   from members' own addresses (each capped), and then pausing the clocks is right.
//!
//! # Layout
//!
//! Layers, lowest first; each module imports only from the ones above it in this list
//! (and from `crowds-net` and `crowds-proto`, where the membership rules live):
//! - [`store`]: persistence (SQLite or PostgreSQL): accounts, each crowd's membership
//!   between epochs, the signed documents; asks [`crowds_proto::roster`] for every rule.
//! - [`config`]: [`BlenderConfig`] and [`ApiLimits`], with their defaults.
//! - `admission`: sorting connections into the members' and strangers' budgets,
//!   per-address and per-key caps, what failed logins are counted against.
//! - `state`: what the blender's tasks share: crowds and their published documents,
//!   budgets, counters, the store connection.
//! - `reply`: the API's common answers (errors, retry-after, interval hints).
//! - `join`: `POST /v1/join`: login, throttling, the peer-address check.
//! - `api`: request dispatch, heartbeats, leaves, the crowd document and deltas.
//! - `epochs`: the ticker that asks the store to cut or refresh epochs and signs them.
//! - `status`: the typed status behind `status.json`, the HTML page and `/metrics`.
//! - `server`: [`start`]: key, store, accept loops and ticker wired together.

#![forbid(unsafe_code)]
// A stranger's bytes must never panic the blender: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod store;

mod admission;
mod api;
pub mod config;
mod epochs;
mod join;
mod reply;
mod server;
mod state;
mod status;

pub use config::{
    default_password_checks, ApiLimits, BlenderConfig, DEFAULT_MAX_JOINS_PER_MINUTE, MAX_API_BODY,
    MAX_API_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, MAX_STRANGER_CONNECTIONS,
    MEMBER_CONNECTIONS_PER_KEY, PASSWORD_CHECK_QUEUE,
};
pub use crowds_proto::api::{JoinRequest, JoinResponse};
pub use server::{load_key, start, RunningBlender};
pub use status::{BlenderStatus, CrowdStatus, MemberStatus, StatusCounters, StatusLoad};
