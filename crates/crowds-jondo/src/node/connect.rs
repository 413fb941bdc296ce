//! Tunnels the user opens: `CONNECT` (and SOCKS, which goes through it) at the initiator.
//!
//! Owns when the client hears "connected" (at once with optimistic tunnels, otherwise once
//! the exit has answered), the look at the client's opening bytes (plaintext HTTP is served
//! as proxied requests, never passed on raw; cleartext HTTP/2 is closed), retries of a
//! tunnel whose path broke before the exit answered (with the same early bytes, on a
//! repaired path), and how a failure reaches a client that was already told "connected":
//! a TLS client gets a fatal TLS alert, anything else a closed connection. The byte pumps
//! are [`crate::tunnel`]'s; routing is [`super::route`]'s.
//!
//! With optimistic tunnels a tunnel costs one round trip over the whole path less: the
//! client's first bytes (its TLS ClientHello) travel with the tunnel request instead of
//! after the exit's answer, as Tor's optimistic data does.

use super::route::{InFlight, MAX_RETRIES};
use super::{Node, PlainHttpServer, ERROR_KINDS};
use crate::tunnel::{self, Activity, Io, Rewound, Uplink};
use bytes::Bytes;
use crowds_net::body::{self, Body, BoxError};
use crowds_net::net::now_ms;
use crowds_proto::path::Predecessor;
use crowds_proto::relay::{self, ErrorKind};
use crowds_proto::sniff::{self, Opening};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a failed tunnel waits for its client's opening bytes, to tell whether the
/// client speaks TLS (and gets an alert). A TLS client sends its ClientHello as soon as it
/// is told "connected"; a client waiting for the server to speak first waits in vain.
const OPENING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Bytes that tell a TLS opening ([`sniff::is_tls`]).
const TLS_DECIDES: usize = 3;

/// The head of the user's `CONNECT`, from which each attempt's request is made.
#[derive(Clone)]
struct Head(http::request::Parts);

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        Request::from_parts(self.0.clone(), body)
    }
}

/// The crowd's answer to a tunnel: still on its way, or here.
enum Answer {
    Pending(BoxFuture<'static, Response<Body>>),
    Here(Response<Body>),
}

impl Node {
    /// Opens a tunnel for the user's `CONNECT` (authority form; the client's side is
    /// hyper's pending upgrade in its extensions) and returns what the client is to be
    /// answered. On success the tunnel runs in a task of its own.
    pub(super) async fn initiate_tunnel(
        self: Arc<Self>,
        mut req: Request<Body>,
        on_plain_http: PlainHttpServer,
    ) -> Response<Body> {
        self.stats.initiated.fetch_add(1, Ordering::Relaxed);
        self.stats.tunnels_initiated.fetch_add(1, Ordering::Relaxed);
        let Some(client) = req.extensions_mut().remove::<OnUpgrade>() else {
            return body::crowd_error(ErrorKind::BadRequest);
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // A literal address of the crowd's own infrastructure is refused here, where the
        // client can still be told so with a status (every exit refuses it too).
        if let (Ok(target), Some(crowd)) =
            (relay::request_target(req.method(), req.uri()), self.crowd())
        {
            let literal = target.host.parse::<std::net::IpAddr>().ok();
            if literal.is_some_and(|ip| {
                crate::exit::is_infrastructure(
                    &std::net::SocketAddr::new(ip, target.port),
                    &self.exit,
                    &crowd,
                )
            }) {
                return body::crowd_error(ErrorKind::ExitPolicy);
            }
        }
        let (mut parts, _) = req.into_parts();
        parts.extensions = http::Extensions::new();
        let head = Head(parts);
        let (uplink, first_body) = Uplink::new();
        let first = self
            .clone()
            .relay(Predecessor::Local, head.request(first_body));
        let answer = self.clone().answer(head, uplink.clone(), first).boxed();
        // Only a jondo that can place the request answers before the crowd did: a jondo
        // outside the crowd says so with a status the client can read.
        let optimistic = self.optimistic_tunnels
            && self
                .crowd()
                .is_some_and(|c| super::route::crowd_usable(&c, Predecessor::Local, now_ms()));
        let answer = if optimistic {
            Answer::Pending(answer)
        } else {
            let resp = answer.await;
            if !resp.status().is_success() {
                return resp;
            }
            Answer::Here(resp)
        };
        let guard = InFlight::new(&self.in_flight);
        tokio::spawn(self.session(client, uplink, answer, authority, on_plain_http, guard));
        Response::new(body::empty())
    }

    /// The crowd's answer to a tunnel, retried (with every byte sent so far) while a
    /// path breaks before the exit answered. A success stops the keeping of early bytes.
    async fn answer(
        self: Arc<Self>,
        head: Head,
        uplink: Arc<Uplink>,
        first: BoxFuture<'static, Response<Body>>,
    ) -> Response<Body> {
        let mut resp = first.await;
        for _ in 0..MAX_RETRIES {
            if relay::error_kind(resp.headers()) != Some(ErrorKind::PathBroken) {
                break;
            }
            let Some(body) = uplink.restart() else { break };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            resp = self
                .clone()
                .relay(Predecessor::Local, head.request(body))
                .await;
        }
        if resp.status().is_success() {
            uplink.commit();
        } else {
            let kind = failure(&resp);
            if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                self.stats.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        resp
    }

    /// Runs a tunnel once the client has its answer: reads the client's opening bytes
    /// (passing the server's bytes on meanwhile, for protocols where the server speaks
    /// first), then pumps both ways.
    async fn session(
        self: Arc<Self>,
        client: OnUpgrade,
        uplink: Arc<Uplink>,
        answer: Answer,
        authority: String,
        on_plain_http: PlainHttpServer,
        guard: InFlight,
    ) {
        let idle = self.exit.idle_timeout;
        let Ok(upgraded) = client.await else {
            uplink.close();
            return;
        };
        let mut client: Box<dyn Io> = Box::new(TokioIo::new(upgraded));
        let (mut pending, mut server) = match answer {
            Answer::Pending(f) => (Some(f), None),
            Answer::Here(resp) => (None, Some(resp.into_body())),
        };
        let mut prefix = Vec::new();
        let mut server_spoke = false;
        let mut client_ended = false;
        let mut chunk = [0u8; sniff::SNIFF_BYTES];
        let opened = tokio::time::timeout(idle, async {
            loop {
                tokio::select! {
                    n = client.read(&mut chunk) => {
                        let n = n.map_err(|_| ())?;
                        if n == 0 {
                            client_ended = true;
                            return Ok(Opening::Other);
                        }
                        prefix.extend_from_slice(&chunk[..n]);
                        match sniff::opening(&prefix) {
                            Opening::NeedMore => {}
                            Opening::Http1 if server_spoke => return Ok(Opening::Http2),
                            decided => return Ok(decided),
                        }
                    }
                    resp = wait(&mut pending), if pending.is_some() => {
                        pending = None;
                        if !resp.status().is_success() {
                            // The client was told "connected" a moment ago: its opening
                            // (a TLS ClientHello) is on its way, and says how to fail.
                            let _ = tokio::time::timeout(
                                OPENING_WAIT,
                                read_opening(&mut client, &mut prefix),
                            )
                            .await;
                            if sniff::opening(&prefix) == Opening::Http1 && !server_spoke {
                                // Plain HTTP: served as proxied requests, which answer
                                // the failure with a page the client can read.
                                return Ok(Opening::Http1);
                            }
                            fail(&mut client, failure(&resp), sniff::is_tls(&prefix)).await;
                            return Err(());
                        }
                        server = Some(resp.into_body());
                    }
                    frame = next_frame(&mut server), if server.is_some() => {
                        // The server ending (or failing) before the client's opening was
                        // read closes the tunnel, rather than pass on whatever the client
                        // sends next unread.
                        let Some(Ok(frame)) = frame else { return Err(()) };
                        if let Ok(data) = frame.into_data() {
                            client.write_all(&data).await.map_err(|_| ())?;
                            server_spoke = true;
                        }
                    }
                }
            }
        })
        .await;
        let opening = match opened {
            Ok(Ok(opening)) => opening,
            _ => {
                uplink.close();
                return;
            }
        };
        match opening {
            Opening::Http1 => {
                uplink.close();
                drop(guard);
                tokio::spawn(on_plain_http(self, Rewound::new(prefix, client), authority));
            }
            Opening::Http2 | Opening::NeedMore => {
                tracing::debug!("cleartext HTTP/2 in a tunnel: closed");
                uplink.close();
            }
            Opening::Other => {
                let tls = sniff::is_tls(&prefix) && !server_spoke;
                let (client_r, mut client_w) = tokio::io::split(client);
                let activity = Activity::new();
                let up = async {
                    if !prefix.is_empty() {
                        uplink.send(Bytes::from(prefix)).await?;
                    }
                    if !client_ended {
                        tunnel::read_chunks(client_r, &activity, |c| uplink.send(c)).await?;
                    }
                    uplink.finish().await
                };
                let down = async {
                    let body = match (server, pending) {
                        (Some(body), _) => body,
                        (None, Some(answer)) => {
                            let resp = answer.await;
                            if !resp.status().is_success() {
                                fail(&mut client_w, failure(&resp), tls).await;
                                return Err::<(), BoxError>("the crowd refused the tunnel".into());
                            }
                            resp.into_body()
                        }
                        (None, None) => return Err("no answer".into()),
                    };
                    tunnel::body_to_writer(body, client_w, &activity).await
                };
                tunnel::run(up, down, &activity, idle).await;
                uplink.close();
                drop(guard);
            }
        }
    }
}

/// Awaits an answer that is still pending (the caller checks that there is one).
async fn wait(pending: &mut Option<BoxFuture<'static, Response<Body>>>) -> Response<Body> {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next frame of the server's side, once there is one.
async fn next_frame(server: &mut Option<Body>) -> Option<Result<Frame<Bytes>, BoxError>> {
    match server {
        Some(b) => b.frame().await,
        None => std::future::pending().await,
    }
}

/// Reads the client's opening onto `prefix` until it is classified (and, for TLS,
/// [`sniff::is_tls`] can tell) or the client ends.
async fn read_opening<R: tokio::io::AsyncRead + Unpin>(client: &mut R, prefix: &mut Vec<u8>) {
    let mut chunk = [0u8; sniff::SNIFF_BYTES];
    while sniff::opening(prefix) == Opening::NeedMore || prefix.len() < TLS_DECIDES {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(k) => prefix.extend_from_slice(&chunk[..k]),
        }
    }
}

/// What a failed answer reports.
fn failure(resp: &Response<Body>) -> ErrorKind {
    relay::error_kind(resp.headers()).unwrap_or(ErrorKind::OriginUnreachable)
}

/// Tells a client that was already told "connected" that the tunnel failed: a TLS client
/// gets a fatal alert (so it reports an error at once), then the connection closes.
async fn fail<W: AsyncWrite + Unpin>(client: &mut W, kind: ErrorKind, tls: bool) {
    tracing::debug!(
        "a tunnel failed after its client was answered: {}",
        kind.as_str()
    );
    if tls {
        let _ = client.write_all(&sniff::tls_alert(kind)).await;
    }
    let _ = client.shutdown().await;
}
