//! Routing: placing each request on its path, from this jondo's user or from a peer.
//!
//! Owns initiation (retries of bodiless requests after a broken path), relaying
//! (forward on a link, to itself, or submit at the exit), path repair where a link
//! failed, and the in-flight count. It must not adopt documents (it only waits, briefly,
//! for the poller to adopt a fresher one) nor bind sockets. Whether a crowd is usable is
//! the plain function [`crowd_usable`], handed the time; the async code reads the clock.

use super::{lock, Node, PlainHttpServer, EPOCH_SKEW_WAIT, ERROR_KINDS};
use crate::crowd::Crowd;
use crate::prefetch;
use crowds_net::body::{self, Body};
use crowds_net::net::now_ms;
use crowds_proto::path::{Hop, PathId, Predecessor, RouteError};
use crowds_proto::relay::{self, ErrorKind, PATH_HEADER};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How often a bodiless request is retried after its path broke before any byte of
/// the answer reached the user.
pub const MAX_RETRIES: usize = 2;

/// Whether `crowd` can carry a request from `pred` at `now_ms` (unix ms): it lists this
/// jondo (and the predecessor, if a member) and has not expired.
pub(crate) fn crowd_usable(crowd: &Crowd, pred: Predecessor, now_ms: u64) -> bool {
    crowd.self_id.is_some()
        && now_ms < crowd.doc.expires_at
        && match pred {
            Predecessor::Local => true,
            Predecessor::Member(id) => crowd.doc.member(id).is_some(),
        }
}

impl Node {
    /// Starts a request from this jondo's user into the crowd.
    ///
    /// If the path turns out to be broken before any response byte reached the user, a
    /// request without body (GET, HEAD, OPTIONS, TRACE) is retried, at most
    /// [`MAX_RETRIES`] times. A `CONNECT` is a tunnel ([`super::connect`]), retried the
    /// same way with the bytes its client sent.
    ///
    /// Paths are repaired where they broke: the jondo that could not reach its
    /// successor forgets only its own hop and decides it afresh on the retry. The
    /// initiator re-forms its whole path only when its own first link fails. A
    /// "path broken" answer from further along therefore never makes the initiator pick
    /// a new first hop, so a collaborator on the path cannot force re-formations (each
    /// would give collaborators another sample of the initiator's predecessor).
    ///
    /// `on_plain_http` serves a tunnel whose client turned out to speak plain HTTP (the
    /// front end that owns proxied HTTP passes its server in, so this engine never
    /// reaches up to it).
    pub async fn initiate(
        self: Arc<Self>,
        req: Request<Body>,
        on_plain_http: PlainHttpServer,
    ) -> Response<Body> {
        if req.method() == Method::CONNECT {
            return self.initiate_tunnel(req, on_plain_http).await;
        }
        self.stats.initiated.fetch_add(1, Ordering::Relaxed);
        let retry = retry_copy(&req);
        let mut resp = self.clone().relay(Predecessor::Local, req).await;
        // Each attempt repairs the hop that broke, so a second repair (around a new
        // epoch two hops may be stale at once) is worth one more try.
        for _ in 0..MAX_RETRIES {
            if relay::error_kind(resp.headers()) != Some(ErrorKind::PathBroken) {
                break;
            }
            let Some(again) = retry.as_ref().and_then(|r| retry_copy(r)) else {
                break;
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            resp = self.clone().relay(Predecessor::Local, again).await;
        }
        if let Some(kind) = relay::error_kind(resp.headers()) {
            if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                self.stats.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        resp
    }

    /// The crowd, if it lists this jondo (and `pred`) and has not expired. Around a new
    /// epoch, members fetch the document at slightly different moments: a request from
    /// a member that already has it may reach us first. Then we fetch at once and wait
    /// (at most [`EPOCH_SKEW_WAIT`]) instead of refusing.
    async fn usable_crowd(&self, pred: Predecessor) -> Option<Arc<Crowd>> {
        let usable = |c: &Arc<Crowd>| crowd_usable(c, pred, now_ms());
        if let Some(c) = self.crowd().filter(usable) {
            return Some(c);
        }
        let mut adopted = self.adopted.subscribe();
        self.refresh.notify_one();
        tokio::time::timeout(EPOCH_SKEW_WAIT, async {
            loop {
                if let Some(c) = self.crowd().filter(usable) {
                    return Some(c);
                }
                adopted.changed().await.ok()?;
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Notes that the user's own path was just (re-)formed, at `now_ms` (unix ms).
    fn own_path_formed_now(&self, now_ms: u64) {
        if self.own_path_formed.swap(true, Ordering::Relaxed) {
            self.stats.own_path_reforms.fetch_add(1, Ordering::Relaxed);
            lock(&self.recent).own_reforms.record(now_ms);
        }
    }

    /// Handles a request arriving on a path from `pred`.
    pub fn relay(
        self: Arc<Self>,
        pred: Predecessor,
        req: Request<Body>,
    ) -> BoxFuture<'static, Response<Body>> {
        async move {
            let guard = InFlight::new(&self.in_flight);
            let resp = self.route(pred, req, &guard).await;
            // The request stays in flight until its response body is done.
            let (parts, body) = resp.into_parts();
            let body = body
                .map_frame(move |f| {
                    let _ = &guard;
                    f
                })
                .boxed_unsync();
            Response::from_parts(parts, body)
        }
        .boxed()
    }

    async fn route(
        self: Arc<Self>,
        pred: Predecessor,
        mut req: Request<Body>,
        guard: &InFlight,
    ) -> Response<Body> {
        let Some(crowd) = self.usable_crowd(pred).await else {
            // A relayed request we cannot place even with a fresh document: answer
            // "path broken" so our predecessor re-decides its hop and the initiator
            // retries, rather than failing the user's request.
            return body::crowd_error(match pred {
                Predecessor::Local => ErrorKind::NotAdmitted,
                Predecessor::Member(_) => ErrorKind::PathBroken,
            });
        };
        let self_id = crowd.self_id.unwrap_or_default();
        let in_path = match pred {
            Predecessor::Local => PathId::LOCAL,
            Predecessor::Member(id) => {
                if id != self_id {
                    self.stats.relayed.fetch_add(1, Ordering::Relaxed);
                }
                match relay::path_id(req.headers()) {
                    Ok(p) => p,
                    Err(_) => return body::crowd_error(ErrorKind::BadRequest),
                }
            }
        };
        if relay::request_target(req.method(), req.uri()).is_err() {
            return body::crowd_error(ErrorKind::BadRequest);
        }
        #[cfg(feature = "bench")]
        let forced = bench::forced_hop(pred, &mut req, &crowd);
        #[cfg(not(feature = "bench"))]
        let forced: Option<Hop> = None;
        #[cfg(feature = "measure")]
        let formed_before = lock(&self.paths).formed();
        let candidates = lock(&self.failed).usable(&crowd.forwarders, now_ms());
        let hop = match forced {
            Some(hop) => Ok(hop),
            None => {
                let mut paths = lock(&self.paths);
                let before = paths.formed();
                let hop = paths.route(
                    &mut rand::thread_rng(),
                    pred,
                    in_path,
                    crowd.doc.forward_probability,
                    &candidates,
                );
                if pred == Predecessor::Local && paths.formed() > before {
                    drop(paths);
                    self.own_path_formed_now(now_ms());
                }
                hop
            }
        };
        #[cfg(feature = "measure")]
        if lock(&self.paths).formed() > formed_before {
            measure::on_new_path(pred, &mut req);
        }
        match hop {
            Err(RouteError::TableFull | RouteError::PredecessorFull) => {
                body::crowd_error(ErrorKind::Overloaded)
            }
            Err(_) => body::crowd_error(ErrorKind::NotAdmitted),
            Ok(Hop::Submit) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                let resp = prefetch::submit(req, &self.exit, &crowd, guard.clone()).await;
                let node = self.clone();
                resp.map(|b| {
                    b.map_frame(move |f| {
                        if let Some(d) = f.data_ref() {
                            node.stats
                                .bytes_from_servers
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        f
                    })
                    .boxed_unsync()
                })
            }
            Ok(Hop::Forward { successor, path }) => {
                let id =
                    HeaderValue::from_str(&path.to_hex()).unwrap_or(HeaderValue::from_static("0"));
                req.headers_mut().insert(PATH_HEADER, id);
                if successor == self_id {
                    return self.relay(Predecessor::Member(self_id), req).await;
                }
                let Some(member) = crowd.doc.member(successor) else {
                    return body::crowd_error(ErrorKind::PathBroken);
                };
                // Whether a failure below is the request's own (its body failed on our
                // side: the client aborted an upload or sent a malformed body, or our
                // predecessor reset its stream) or the link's.
                let (req, body_failed) = {
                    let (parts, body) = req.into_parts();
                    let (body, failed) = body::watched(body);
                    (Request::from_parts(parts, body), failed)
                };
                match self.links.send(member, req).await {
                    // A tunnel's bytes travel in the request and response bodies, so it
                    // is relayed like any request.
                    Ok(resp) => resp.map(body::stream),
                    Err(_) if body_failed.load(Ordering::Relaxed) => {
                        // The sending side failed, not the path: the path stays.
                        tracing::debug!("a request body failed on its way in; the path stays");
                        self.stats.client_failures.fetch_add(1, Ordering::Relaxed);
                        body::crowd_error(ErrorKind::BadRequest)
                    }
                    Err(e) if !e.link_failed() => {
                        // The successor refused this one stream on a live link: this
                        // request fails, the hop stays (only a failed link re-forms it).
                        tracing::debug!("successor reset a stream: {e}");
                        body::crowd_error(ErrorKind::PathBroken)
                    }
                    Err(e) => {
                        // Debug, not warn: the error names the successor's member id, and
                        // member ids in logs help whoever reads them link paths.
                        tracing::debug!("path broken: {e}");
                        self.stats.path_failures.fetch_add(1, Ordering::Relaxed);
                        // Only this hop is forgotten: it is decided afresh next time, and
                        // not with the member that just failed.
                        lock(&self.paths).forget(pred, in_path);
                        self.links.forget(successor);
                        lock(&self.failed).pause(successor, now_ms());
                        body::crowd_error(ErrorKind::PathBroken)
                    }
                }
            }
        }
    }
}

/// A copy of a request that can be sent again: no body, and a safe method.
fn retry_copy(req: &Request<Body>) -> Option<Request<Body>> {
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::CONNECT
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Counts a request or tunnel in progress while it lives.
#[derive(Clone)]
pub struct InFlight {
    _count: Arc<InFlightInner>,
}

struct InFlightInner(Arc<AtomicUsize>);

impl InFlight {
    pub(super) fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self {
            _count: Arc::new(InFlightInner(counter.clone())),
        }
    }
}

impl Drop for InFlightInner {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Benchmark builds only (cargo feature `bench`, never in the shipped binary): paths of
/// an exact length, so a crowd path of k jondos can be compared with a chain of k relays.
/// The initiator reads the length from `CROWDS_BENCH_PATH_LENGTH` (jondos on the path,
/// itself included) and each hop counts down in a `crowds-bench-hops` header, choosing a
/// random other member each time. This breaks the protocol's anonymity on purpose.
#[cfg(feature = "bench")]
mod bench {
    use crate::crowd::Crowd;
    use crowds_proto::path::{Hop, PathId, Predecessor};
    use http::{HeaderValue, Request};
    use rand::Rng;

    const HEADER: &str = "crowds-bench-hops";

    pub(super) fn forced_hop<B>(
        pred: Predecessor,
        req: &mut Request<B>,
        crowd: &Crowd,
    ) -> Option<Hop> {
        let remaining: u32 = match pred {
            Predecessor::Local => {
                let k: u32 = std::env::var("CROWDS_BENCH_PATH_LENGTH")
                    .ok()?
                    .parse()
                    .ok()?;
                if k <= 1 {
                    return Some(Hop::Submit);
                }
                k - 1
            }
            Predecessor::Member(_) => {
                // Defence in depth: even in a bench build, a jondo obeys the header only
                // when its own process was started for benchmarking.
                std::env::var_os("CROWDS_BENCH_PATH_LENGTH")?;
                req.headers().get(HEADER)?.to_str().ok()?.parse().ok()?
            }
        };
        if remaining == 0 {
            req.headers_mut().remove(HEADER);
            return Some(Hop::Submit);
        }
        let me = crowd.self_id?;
        let others: Vec<_> = crowd
            .forwarders
            .iter()
            .copied()
            .filter(|m| *m != me)
            .collect();
        if others.is_empty() {
            return None;
        }
        let mut rng = rand::thread_rng();
        let successor = others[rng.gen_range(0..others.len())];
        req.headers_mut()
            .insert(HEADER, HeaderValue::from(remaining - 1));
        Some(Hop::Forward {
            successor,
            path: PathId(rng.gen_range(1..=u64::MAX)),
        })
    }
}

/// Measurement builds only (cargo feature `measure`, never in the shipped binary): a
/// jondo started with `CROWDS_MEASURE_COLLABORATOR=FILE` plays a collaborator. When a
/// new path reaches it and no collaborator saw that path before (they mark requests with
/// a header among themselves), it appends its predecessor's member id to FILE, one per
/// line. A harness compares how often that is the initiator with the paper's
/// 1 - pf(n-c-1)/n. This breaks anonymity on purpose.
#[cfg(feature = "measure")]
mod measure {
    use crowds_proto::path::Predecessor;
    use http::{HeaderValue, Request};
    use std::io::Write;

    const SEEN: &str = "crowds-measure-seen";

    pub(super) fn on_new_path<B>(pred: Predecessor, req: &mut Request<B>) {
        let Ok(file) = std::env::var("CROWDS_MEASURE_COLLABORATOR") else {
            return;
        };
        if req.headers().contains_key(SEEN) {
            return;
        }
        req.headers_mut()
            .insert(SEEN, HeaderValue::from_static("1"));
        let line = match pred {
            Predecessor::Local => "local\n".to_string(),
            Predecessor::Member(id) => format!("{id}\n"),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowds_proto::document::{CrowdDocument, Member};
    use crowds_proto::identity::SecretKey;

    fn crowd(ids: &[u64], me: Option<u64>, expires_at: u64) -> Crowd {
        let keys: Vec<_> = ids
            .iter()
            .map(|_| SecretKey::generate().expect("key").public())
            .collect();
        let members = ids
            .iter()
            .zip(&keys)
            .map(|(id, key)| Member {
                id: *id,
                addr: "127.0.0.1:7000".parse().expect("address"),
                key: *key,
                flags: 0,
            })
            .collect();
        let doc = CrowdDocument {
            crowd: "test".into(),
            epoch: 1,
            forward_probability: 0.75,
            issued_at: 0,
            expires_at,
            members,
        };
        let me = match me.and_then(|m| ids.iter().position(|id| *id == m)) {
            Some(i) => keys[i],
            None => SecretKey::generate().expect("key").public(),
        };
        Crowd::new(doc, &me)
    }

    #[test]
    fn a_crowd_is_usable_while_it_lists_us_and_has_not_expired() {
        let c = crowd(&[1, 2, 3], Some(1), 10_000);
        assert!(crowd_usable(&c, Predecessor::Local, 9_999));
        assert!(crowd_usable(&c, Predecessor::Member(2), 0));
        assert!(!crowd_usable(&c, Predecessor::Local, 10_000), "expired");
        assert!(
            !crowd_usable(&c, Predecessor::Member(4), 0),
            "unknown predecessor"
        );
        let without_us = crowd(&[2, 3], None, 10_000);
        assert!(!crowd_usable(&without_us, Predecessor::Local, 0));
    }
}
