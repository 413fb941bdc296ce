//! `POST /v1/join`: the login (throttled per account and source address, the password
//! checked on the bounded pool), the check that the joining key answers at its peer
//! address, and the store's join under the roster's rules. Never cuts epochs.

use crate::admission::ThrottleKey;
use crate::config::{BUSY_RETRY_AFTER_MS, MAX_API_BODY};
use crate::reply::{error, retry_later, too_many};
use crate::state::{lock, State};
use crowds_net::body::{self, Body};
use crowds_net::net::{self, now_ms};
use crowds_net::safelog::Sensitive;
use crowds_net::tls;
use crowds_proto::document::{Member, FLAG_CLIENT_ONLY};
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::roster::JoinOutcome;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn join(
    state: Arc<State>,
    client: PublicKey,
    source: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let now = now_ms();
    let source = net::source_of(source);
    if let Err(wait) = lock(&state.join_rate).take(source, now) {
        return too_many("too many join requests from this address; slow down", wait);
    }
    let body = tokio::time::timeout(
        state.limits.read_timeout,
        body::read_limited(req.into_body(), MAX_API_BODY),
    )
    .await;
    let bytes = match body {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Err(_) => {
            state.gate.bodies_timed_out.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    // The account name is checked here, before it is used as a throttle key. A name
    // or password no account can have is a refused login (401, so that a jondo stops
    // and says so), at once: no check, nothing counted.
    let join = match crowds_proto::api::parse_join(&bytes) {
        Ok(join) => join,
        Err(
            e
            @ (crowds_proto::api::ApiError::BadAccount | crowds_proto::api::ApiError::BadPassword),
        ) => {
            state.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, &format!("login refused: {e}"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let password = zeroize::Zeroizing::new(join.password);
    let account = join.account.clone();
    let record = match state.with_store(move |s| s.login_record(&account)).await {
        Ok(record) => record,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    };
    // A place among the password checks next: beyond the pool and its queue a join is
    // refused at once, before anything is counted against the account.
    let Some(ticket) = state.checks.try_admit() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins are being checked; try again shortly",
            BUSY_RETRY_AFTER_MS,
        );
    };
    // Password guessing is slowed per account and per source address. The attempt is
    // counted against the account before it is checked (a success clears it), so that
    // parallel guesses for one account cannot all pass a lockout none of them has
    // triggered yet: exactly the free ones run. The source address is checked now and
    // charged only for a failure, so that members behind one address (a NAT) can log in
    // at the same moment; what one address sends at once is bounded by the join rate
    // limit's burst.
    let account_key = ThrottleKey::Account(join.account.clone());
    let source_key = ThrottleKey::Source(source);
    let begun = {
        let mut throttle = lock(&state.logins);
        throttle
            .check(&source_key, now)
            .and_then(|()| throttle.begin(std::slice::from_ref(&account_key), now))
    };
    if let Err(wait) = begun {
        return too_many("too many failed logins; wait before trying again", wait);
    }
    // The slow hash check runs on the pool, outside the store's lock.
    let verified = state
        .checks
        .run(ticket, move || match record {
            Some(r) => r.verify(&password).map(|ok| ok.then_some((r.id, r.crowd))),
            None => {
                crate::store::waste_password_check(&password);
                Ok(None)
            }
        })
        .await;
    let (id, crowd_name) = match verified {
        Some(Ok(Some(found))) => {
            let mut throttle = lock(&state.logins);
            throttle.record_success(&account_key);
            throttle.record_success(&source_key);
            found
        }
        Some(Ok(None)) => {
            state.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
            let delay = {
                let mut throttle = lock(&state.logins);
                let source_delay = throttle.record_failure(source_key, now_ms());
                source_delay.max(throttle.check(&account_key, now).err().unwrap_or(0))
            };
            // Neither the password nor the account name is logged.
            tracing::warn!(
                source = %Sensitive(source),
                next_attempt_delay_ms = delay,
                "refused a login: unknown account or wrong password"
            );
            return error(
                StatusCode::UNAUTHORIZED,
                "login refused: unknown account or wrong password",
            );
        }
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "account store failure"),
    };
    let first_epoch_published = state.crowd(&crowd_name).is_some_and(|c| {
        c.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    });
    let Some(config) = state.crowd(&crowd_name).map(|c| c.config.clone()) else {
        tracing::warn!(
            member = id,
            "join refused: this blender does not serve the account's crowd"
        );
        return error(
            StatusCode::FORBIDDEN,
            "this account belongs to a crowd this blender does not serve",
        );
    };
    // The article's firewalled members: if we cannot reach the peer port, the member
    // may still initiate paths but is never chosen as a forwarder. If something answers
    // there, it must prove the joining key: listing another member's address would send
    // peers to the wrong key, and every path through it would break and re-form.
    let reachable = match check_peer(
        &state.key,
        client,
        join.peer_addr,
        state.connect_back_timeout,
    )
    .await
    {
        PeerCheck::Proven => true,
        PeerCheck::Unreachable => false,
        PeerCheck::Failed(e) => {
            tracing::error!("cannot check a joining member's peer address: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the blender cannot check the peer address",
            );
        }
        PeerCheck::OtherKey(why) => {
            state
                .stats
                .address_claims_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                member = id,
                peer = %Sensitive(join.peer_addr),
                "join refused: the peer address does not answer with the member's key ({why})"
            );
            return error(
                StatusCode::FORBIDDEN,
                &format!(
                    "the peer address answers with another key: {why}; advertise this \
                     jondo's own peer address"
                ),
            );
        }
    };
    let member = Member {
        id,
        addr: join.peer_addr,
        key: client,
        flags: if reachable { 0 } else { FLAG_CLIENT_ONLY },
    };
    // A pending join is admitted at the next scheduled epoch (a new crowd's first epoch
    // is cut at once).
    let admission_expected_at = config.admission_expected_at(first_epoch_published, now_ms());
    let outcome = match state
        .with_store(move |s| s.join(&config, &member, now_ms()))
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    };
    let status = match outcome {
        JoinOutcome::AlreadyMember => {
            state.stats.joins_member.fetch_add(1, Ordering::Relaxed);
            "member"
        }
        JoinOutcome::Pending => {
            state.stats.joins_pending.fetch_add(1, Ordering::Relaxed);
            if !reachable {
                state
                    .stats
                    .client_only_joins
                    .fetch_add(1, Ordering::Relaxed);
            }
            "pending"
        }
        JoinOutcome::TooSoon { retry_after_ms } => {
            state.stats.joins_too_soon.fetch_add(1, Ordering::Relaxed);
            tracing::info!(member = id, "join refused: admitted too recently");
            return too_many(
                "this account joined too recently; the crowd limits how often an account may join",
                retry_after_ms,
            );
        }
    };
    state.note_member(client, source, now_ms());
    tracing::info!(member = id, status, client_only = !reachable, "join");
    body::json(
        StatusCode::OK,
        &serde_json::json!({
            "member_id": id,
            "status": status,
            "client_only": !reachable,
            "crowd": crowd_name,
            "admission_expected_at": (status == "pending").then_some(admission_expected_at),
        }),
    )
}

/// What answers at a joining member's peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerCheck {
    /// A TLS handshake there proved the member's key.
    Proven,
    /// Nothing accepted a TCP connection in time (firewalled: a client-only member).
    Unreachable,
    /// Something accepted the connection but did not prove the key: why.
    OtherKey(String),
    /// The blender could not run the check itself: why.
    Failed(String),
}

/// Checks that `key` answers at `addr`: a TCP connection, then a TLS 1.3 handshake as a
/// client in which the server must prove `key`. The blender presents its own identity
/// key, which every jondo pins as the blender's. Each step gets `timeout`.
pub(crate) async fn check_peer(
    identity: &SecretKey,
    key: PublicKey,
    addr: SocketAddr,
    timeout: Duration,
) -> PeerCheck {
    let Ok(Ok(tcp)) = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
    else {
        return PeerCheck::Unreachable;
    };
    let config = match tls::client_config(identity, key) {
        Ok(c) => c,
        Err(e) => return PeerCheck::Failed(e.to_string()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(tls::server_name(), tcp)).await {
        // The server proved the key in its handshake; the connection is closed at once.
        Ok(Ok(_)) => PeerCheck::Proven,
        Ok(Err(e)) => PeerCheck::OtherKey(format!(
            "the TLS handshake there did not prove this member's key ({e})"
        )),
        Err(_) => PeerCheck::OtherKey(format!(
            "no TLS handshake proving this member's key within {timeout:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::TlsAcceptor;

    /// A TLS server proving `identity` on 127.0.0.1 (refusing every client key, as a
    /// jondo refuses keys it does not know: the proof comes before that).
    async fn tls_server(identity: &SecretKey) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = tls::server_config(identity, Arc::new(|_: &PublicKey| false)).expect("tls");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(stream).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_peer_address_must_prove_the_joining_key() {
        let blender = SecretKey::generate().expect("key");
        let member = SecretKey::generate().expect("key");
        let other = SecretKey::generate().expect("key");
        let timeout = Duration::from_secs(3);
        let at_member = tls_server(&member).await;
        assert_eq!(
            check_peer(&blender, member.public(), at_member, timeout).await,
            PeerCheck::Proven
        );
        // Another member's address: it answers, with its own key.
        let at_other = tls_server(&other).await;
        let PeerCheck::OtherKey(why) =
            check_peer(&blender, member.public(), at_other, timeout).await
        else {
            panic!("another key must not prove the member's");
        };
        assert!(why.contains("did not prove"), "{why}");
        // Something that accepts connections but never speaks TLS.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mute_addr = mute.local_addr().expect("addr");
        let PeerCheck::OtherKey(why) = check_peer(
            &blender,
            member.public(),
            mute_addr,
            Duration::from_millis(300),
        )
        .await
        else {
            panic!("no handshake is no proof");
        };
        assert!(why.contains("within"), "{why}");
        drop(mute);
        // Nothing listens: a firewalled (client-only) member, as before.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert_eq!(
            check_peer(&blender, member.public(), closed, timeout).await,
            PeerCheck::Unreachable
        );
    }
}
