//! Keeping in step with the blender: joining, heartbeats and crowd document polling.
//!
//! Owns the loops that talk to the blender after start-up and their timing (backoff,
//! jitter). The timing rules are plain functions ([`jitter`], [`poll_wait`],
//! [`next_join_delay`]) given the randomness, so they are tested without sleeping; the
//! loops read the clock and sleep. It must not adopt documents itself: it hands them to
//! the relay engine ([`Node::adopt`]), which decides.

use super::JondoConfig;
use crate::blender_client::BlenderClient;
use crate::node::{AdoptError, Node};
use crowds_net::error::NodeError;
use crowds_net::net::now_ms;
use http::{header, HeaderValue, Method, StatusCode};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest wait between two document polls while the blender fails.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait between two join attempts while the blender is unreachable.
const MAX_JOIN_DELAY: Duration = Duration::from_secs(30);

/// `d` spread by up to a quarter either way, so members do not call the blender in step.
pub(crate) fn jitter(d: Duration, rng: &mut impl Rng) -> Duration {
    d.mul_f64(rng.gen_range(0.75..1.25))
}

/// How long the poller waits after a fetch when the poll interval is `every` and the last
/// `failures` fetches failed: `every` while the blender answers, else doubling per
/// failure (up to 32 times) within [`MAX_POLL_BACKOFF`], jittered.
pub(crate) fn poll_wait(every: Duration, failures: u32, rng: &mut impl Rng) -> Duration {
    if failures == 0 {
        return every;
    }
    let backoff = every * 2u32.saturating_pow(failures.min(5));
    jitter(backoff.min(MAX_POLL_BACKOFF), rng)
}

/// The delay before the next join attempt after one that waited `delay`: doubled, within
/// [`MAX_JOIN_DELAY`].
pub(crate) fn next_join_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_JOIN_DELAY)
}

/// Tells the user, at warn level, what joining as a client-only member costs.
pub(super) fn warn_client_only(advertise: SocketAddr) {
    tracing::warn!(
        "the blender cannot reach this jondo's peer address {advertise}: it joins as a client-only member. \
         It can browse, but it never relays for others, so the first jondo on its path knows that \
         every request it gets from this jondo was started here: against a collaborating first hop \
         its user has no anonymity, and the crowd's probable innocence does not cover it. Open the \
         peer port (or set --advertise) and restart to become a forwarding member."
    );
}

/// Joins the crowd at the blender, retrying with growing, jittered delays while it is
/// unreachable and waiting as told while the account may not join yet.
pub(super) async fn join_with_retry(
    blender: &BlenderClient,
    config: &JondoConfig,
    advertise: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<crowds_proto::api::JoinResponse, NodeError> {
    let mut delay = Duration::from_millis(250);
    loop {
        match blender
            .join(&config.account, config.password.expose(), advertise)
            .await
        {
            Err(NodeError::Blender(e)) => {
                tracing::warn!("blender not reachable yet ({e}); retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(NodeError::Blender("shut down before joining".into())),
                    _ = tokio::time::sleep(jitter(delay, &mut rand::thread_rng())) => {}
                }
                delay = next_join_delay(delay);
            }
            Err(NodeError::JoinTooSoon(wait)) => {
                tracing::warn!(
                    "the crowd limits how often an account joins; joining again in {wait:?}"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(NodeError::Blender("shut down before joining".into())),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            other => return other,
        }
    }
}

/// Keeps the crowd document fresh: polls the blender (early when the node asks), takes
/// deltas where it can, backs off while the blender fails, and hands what it fetched
/// to [`Node::adopt`].
pub(super) async fn poll_documents(
    node: Arc<Node>,
    blender: BlenderClient,
    shutdown: CancellationToken,
) {
    let mut etag: Option<HeaderValue> = None;
    let mut failures = 0u32;
    // After a delta that did not apply, the next fetch asks for the whole document.
    let mut whole = false;
    loop {
        let every = node.poll_interval();
        let wait = poll_wait(every, failures, &mut rand::thread_rng());
        let (base, blender_key) = node.document();
        let have = base
            .as_ref()
            .filter(|_| !whole)
            .map(|d| (d.epoch, d.issued_at));
        whole = false;
        node.stats.document_fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = blender.fetch_document(etag.as_ref(), have).await;
        if let Ok(reply) = &fetched {
            node.take_hints(&reply.headers);
        }
        match fetched {
            Ok(reply) if reply.status == StatusCode::OK => {
                failures = 0;
                node.set_blender_reachable(true);
                let is_delta = reply
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes())
                    == Some(crowds_proto::api::DELTA_CONTENT_TYPE.as_bytes());
                let bytes = match (is_delta, &base) {
                    (false, _) => Ok(reply.body.to_vec()),
                    (true, Some(base)) => {
                        crowds_proto::delta::DocumentDelta::apply(base, &reply.body, &blender_key)
                    }
                    (true, None) => Err(crowds_proto::document::DocumentError::Invalid(
                        "a delta without a base document",
                    )),
                };
                match bytes.map(|b| node.adopt(&b, now_ms())) {
                    Ok(Ok(_)) => {
                        etag = reply.headers.get(header::ETAG).cloned();
                        let counter = if is_delta {
                            &node.stats.documents_delta
                        } else {
                            &node.stats.documents_full
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(AdoptError::LowPf(_))) => {
                        // Logged once by `adopt`. The same document is not fetched again
                        // until the blender changes it.
                        etag = reply.headers.get(header::ETAG).cloned();
                    }
                    Ok(Err(e)) => tracing::warn!("rejected a crowd document: {e}"),
                    Err(e) => {
                        tracing::warn!(
                            "a document delta did not apply ({e}); fetching the whole document"
                        );
                        whole = true;
                        continue;
                    }
                }
            }
            Ok(reply) if reply.status == StatusCode::NOT_MODIFIED => {
                failures = 0;
                node.set_blender_reachable(true);
            }
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                node.set_blender_reachable(true);
            }
            Ok(reply) => {
                failures += 1;
                tracing::warn!("blender answered {} to a document fetch", reply.status);
            }
            Err(e) => {
                failures += 1;
                node.set_blender_reachable(false);
                tracing::warn!("{e}; keeping the last crowd document until it expires");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = node.document_wanted() => {}
        }
    }
}

/// Tells the blender at jittered intervals that this jondo is alive, and joins again
/// when the blender no longer lists it.
pub(super) async fn heartbeat(
    node: Arc<Node>,
    blender: BlenderClient,
    config: JondoConfig,
    advertise: SocketAddr,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(node.heartbeat_interval(), &mut rand::thread_rng())) => {}
        }
        let sent = blender
            .call(Method::POST, "/v1/heartbeat", None, None)
            .await;
        if let Ok(reply) = &sent {
            node.take_hints(&reply.headers);
        }
        match sent {
            Ok(r) if r.status == StatusCode::FORBIDDEN => {
                // The blender dropped us (we were silent, or it lost state): join again.
                tracing::warn!("the blender no longer lists this jondo; joining again");
                match blender
                    .join(&config.account, config.password.expose(), advertise)
                    .await
                {
                    Ok(joined) => {
                        if joined.client_only {
                            warn_client_only(advertise);
                        }
                        node.note_join(&joined, now_ms());
                    }
                    Err(e) => tracing::warn!("re-join failed: {e}"),
                }
            }
            Ok(_) => node.set_blender_reachable(true),
            Err(e) => {
                node.set_blender_reachable(false);
                tracing::warn!("heartbeat failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut rng = StdRng::seed_from_u64(7);
        let d = Duration::from_secs(4);
        for _ in 0..1000 {
            let j = jitter(d, &mut rng);
            assert!(
                j >= Duration::from_secs(3) && j < Duration::from_secs(5),
                "{j:?}"
            );
        }
    }

    #[test]
    fn polls_back_off_while_the_blender_fails() {
        let mut rng = StdRng::seed_from_u64(7);
        let every = Duration::from_secs(1);
        assert_eq!(
            poll_wait(every, 0, &mut rng),
            every,
            "no jitter while it answers"
        );
        for failures in 1..10 {
            let wait = poll_wait(every, failures, &mut rng);
            let base = (every * 2u32.pow(failures.min(5))).min(MAX_POLL_BACKOFF);
            assert!(
                wait >= base.mul_f64(0.75) && wait < base.mul_f64(1.25),
                "{wait:?}"
            );
        }
        // A long interval never waits beyond the cap (plus its jitter).
        let wait = poll_wait(Duration::from_secs(50), 3, &mut rng);
        assert!(wait < MAX_POLL_BACKOFF.mul_f64(1.25), "{wait:?}");
    }

    #[test]
    fn join_delays_double_up_to_the_cap() {
        let mut delay = Duration::from_millis(250);
        let mut seen = Vec::new();
        for _ in 0..10 {
            delay = next_join_delay(delay);
            seen.push(delay.as_millis());
        }
        assert_eq!(&seen[..4], [500, 1_000, 2_000, 4_000]);
        assert_eq!(seen[9], MAX_JOIN_DELAY.as_millis());
    }
}
