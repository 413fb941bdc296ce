//! The blender's API messages (JSON bodies), as types with their limits.
//!
//! Owns the shape of what a jondo sends the blender and gets back. Parsing is serde's;
//! [`parse_join`] adds the size limit and the checks a blender applies before it looks
//! at the password. Fuzzed, since the blender reads them from anyone who completes a
//! TLS handshake.

use crate::MemberId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Largest JSON request body the blender reads.
pub const MAX_API_BODY: usize = 16 * 1024;
/// Longest account (or crowd) name.
pub const MAX_NAME: usize = 64;
/// Longest password a blender checks.
pub const MAX_PASSWORD: usize = 1024;

/// Account and crowd names: 1 to [`MAX_NAME`] ASCII letters, digits, `.`, `_` or `-`
/// (what `crowds account add` accepts). A blender checks a join's account name with this
/// before it uses the name for anything, as a throttle key above all.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A join request. Its `Debug` never shows the password.
#[derive(Serialize, Deserialize)]
pub struct JoinRequest {
    /// Account name.
    pub account: String,
    /// Password (sent only inside the pinned TLS channel).
    pub password: String,
    /// Where other jondos reach this one.
    pub peer_addr: SocketAddr,
}

/// Request header of `GET /v1/crowd`: `EPOCH-ISSUED_AT` of the document the jondo
/// holds, so the blender may answer with a [`crate::delta::DocumentDelta`] instead of
/// the whole document.
pub const HAVE_HEADER: &str = "crowds-have";
/// Content type of a whole signed crowd document.
pub const DOCUMENT_CONTENT_TYPE: &str = "application/x-crowds-document";
/// Content type of a delta.
pub const DELTA_CONTENT_TYPE: &str = "application/x-crowds-delta";

/// Parses a [`HAVE_HEADER`] value.
pub fn parse_have(value: &str) -> Option<(u64, u64)> {
    let (epoch, issued) = value.split_once('-')?;
    Some((epoch.parse().ok()?, issued.parse().ok()?))
}

/// Response header of `GET /v1/crowd` and `POST /v1/heartbeat`: how often (ms) the
/// blender would like heartbeats, so a crowd's operator sets one heartbeat timeout and
/// jondos that were not told otherwise follow it.
pub const HEARTBEAT_HINT_HEADER: &str = "crowds-heartbeat-ms";
/// Response header of the same calls: how often (ms) the blender would like document
/// polls; it grows with the crowd, so big crowds do not flood their blender.
pub const POLL_HINT_HEADER: &str = "crowds-poll-ms";
/// Shortest interval a hint may ask for.
pub const MIN_HINT_MS: u64 = 1_000;
/// Longest interval a hint may ask for.
pub const MAX_HINT_MS: u64 = 3_600_000;

/// The intervals a blender suggests (heartbeat, poll), in ms: six heartbeats per
/// heartbeat timeout; one poll per second per thousand members (at least every second),
/// but never rarer than twice per join interval, so jondos still adopt a new epoch
/// within about half a join interval of each other.
pub fn suggested_intervals(
    members: usize,
    heartbeat_timeout_ms: u64,
    join_interval_ms: u64,
) -> (u64, u64) {
    let heartbeat = (heartbeat_timeout_ms / 6).clamp(MIN_HINT_MS, MAX_HINT_MS);
    let ceiling = (join_interval_ms / 2).clamp(MIN_HINT_MS, MAX_HINT_MS);
    let poll = (members as u64).clamp(MIN_HINT_MS, ceiling);
    (heartbeat, poll)
}

/// Parses a hint header's value; `None` for garbage or values outside
/// [`MIN_HINT_MS`]..=[`MAX_HINT_MS`].
pub fn parse_hint(value: &[u8]) -> Option<u64> {
    let ms: u64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (MIN_HINT_MS..=MAX_HINT_MS).contains(&ms).then_some(ms)
}

/// The answer to a join.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The member id (the account's number).
    pub member_id: MemberId,
    /// `"member"` or `"pending"`.
    pub status: String,
    /// The blender could not connect back to the peer address: this member is listed
    /// as client-only (it initiates but is never chosen as a forwarder).
    #[serde(default)]
    pub client_only: bool,
    /// The crowd the account belongs to (absent from old blenders: the default one).
    #[serde(default)]
    pub crowd: Option<String>,
    /// For a pending join: when the next scheduled epoch, which admits it, is due (unix
    /// ms). Epochs happen only at scheduled times, so a newcomer may wait up to a join
    /// interval; the jondo tells its user when.
    #[serde(default)]
    pub admission_expected_at: Option<u64>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("account", &self.account)
            .field("password", &"[redacted]")
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

/// Why a join request was refused before any password check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// More than [`MAX_API_BODY`] bytes.
    #[error("request body too large")]
    TooLarge,
    /// Not the JSON we expect.
    #[error("malformed join request")]
    Malformed,
    /// A peer address nobody can connect to.
    #[error("peer_addr must be a reachable address and port")]
    BadPeerAddr,
    /// An account name no account can have (see [`valid_name`]); the name itself is
    /// not repeated, since it may be something the user meant to keep private.
    #[error("invalid account name: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadAccount,
    /// An empty password, or one longer than [`MAX_PASSWORD`] bytes.
    #[error("invalid password: it must be 1 to 1024 bytes")]
    BadPassword,
}

/// Parses and checks a join request body.
pub fn parse_join(body: &[u8]) -> Result<JoinRequest, ApiError> {
    if body.len() > MAX_API_BODY {
        return Err(ApiError::TooLarge);
    }
    let join: JoinRequest = serde_json::from_slice(body).map_err(|_| ApiError::Malformed)?;
    if join.peer_addr.ip().is_unspecified() || join.peer_addr.port() == 0 {
        return Err(ApiError::BadPeerAddr);
    }
    if !valid_name(&join.account) {
        return Err(ApiError::BadAccount);
    }
    if join.password.is_empty() || join.password.len() > MAX_PASSWORD {
        return Err(ApiError::BadPassword);
    }
    Ok(join)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any body: parsing never panics, and whatever it accepts has a valid account
        /// name and a password of a size the blender checks.
        #[test]
        fn join_parsing_accepts_only_checkable_requests(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(join) = parse_join(&body) {
                prop_assert!(valid_name(&join.account));
                prop_assert!(!join.password.is_empty() && join.password.len() <= MAX_PASSWORD);
            }
        }

        /// Names of the accepted shape go through, with their password, unchanged.
        #[test]
        fn valid_names_are_accepted(account in "[A-Za-z0-9._-]{1,64}", password in "[ -~]{1,40}") {
            let body = serde_json::json!({
                "account": account, "password": password, "peer_addr": "127.0.0.2:7000",
            });
            let join = parse_join(body.to_string().as_bytes()).expect("valid");
            prop_assert_eq!(join.account, account);
            prop_assert_eq!(join.password, password);
        }
    }

    #[test]
    fn join_requests() {
        let ok = br#"{"account":"a","password":"p","peer_addr":"127.0.0.2:7000"}"#;
        assert_eq!(parse_join(ok).expect("ok").account, "a");
        assert_eq!(parse_join(b"{}").err(), Some(ApiError::Malformed));
        assert_eq!(
            parse_join(br#"{"account":"a","password":"p","peer_addr":"0.0.0.0:7000"}"#).err(),
            Some(ApiError::BadPeerAddr)
        );
        assert_eq!(
            parse_join(&vec![b' '; MAX_API_BODY + 1]).err(),
            Some(ApiError::TooLarge)
        );
        let long = "a".repeat(MAX_NAME + 1);
        for bad in ["", "a b", "a/b", "ä", "a\\u0000", long.as_str()] {
            let body =
                format!(r#"{{"account":"{bad}","password":"p","peer_addr":"127.0.0.2:7000"}}"#);
            assert_eq!(
                parse_join(body.as_bytes()).err(),
                Some(ApiError::BadAccount),
                "{bad:?}"
            );
        }
        let longest = "a".repeat(MAX_NAME);
        assert!(valid_name(&longest) && valid_name("Alice_2.b-c"));
        let long_pw = "p".repeat(MAX_PASSWORD + 1);
        for bad in ["", long_pw.as_str()] {
            let body =
                format!(r#"{{"account":"a","password":"{bad}","peer_addr":"127.0.0.2:7000"}}"#);
            assert_eq!(
                parse_join(body.as_bytes()).err(),
                Some(ApiError::BadPassword)
            );
        }
        let debug = format!("{:?}", parse_join(ok).expect("ok"));
        assert!(
            !debug.contains("\"p\""),
            "the password shows in Debug: {debug}"
        );
    }

    #[test]
    fn interval_hints_scale_and_parse_strictly() {
        // Defaults (30 s timeout and join interval): 5 s heartbeats, 1 s polls.
        assert_eq!(suggested_intervals(20, 30_000, 30_000), (5_000, 1_000));
        // 10,000 members: polls every 10 s; a 5 min timeout gives 50 s heartbeats.
        assert_eq!(
            suggested_intervals(10_000, 300_000, 30_000),
            (50_000, 10_000)
        );
        // Never rarer than half a join interval, never below a second.
        assert_eq!(
            suggested_intervals(50_000, 300_000, 30_000),
            (50_000, 15_000)
        );
        assert_eq!(suggested_intervals(0, 100, 100), (1_000, 1_000));
        // The default day-long join interval does not slow polls down: they stay at a
        // second per thousand members, so the scheduled epoch reaches everyone soon.
        assert_eq!(
            suggested_intervals(1_000, 30_000, 86_400_000),
            (5_000, 1_000)
        );
        assert_eq!(
            suggested_intervals(20_000, 30_000, 86_400_000),
            (5_000, 20_000)
        );
        assert_eq!(parse_hint(b"5000"), Some(5_000));
        for bad in [&b"999"[..], b"3600001", b"-1", b"5s", b"", b"\xff"] {
            assert_eq!(parse_hint(bad), None, "{bad:?}");
        }
    }
}
