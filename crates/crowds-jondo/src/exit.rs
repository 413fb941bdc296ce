//! Submitting a request to the end server: the last jondo of a path.
//!
//! Owns name resolution at the exit (never at the initiator), the check of every
//! resolved address against the exit policy, the outgoing connection (bound to the
//! jondo's own peer address, so the server sees this member), header hygiene applied
//! once more as a safety net, and the response head timeout. One fresh connection per
//! request: connections to servers are never pooled, so two initiators' requests can
//! never be linked by sharing one. `CONNECT` opens a byte tunnel to the server instead
//! ([`crate::tunnel::to_server`]).
//! Never logs destinations.

use crate::crowd::Crowd;
use crate::tunnel;
use crowds_net::body::{self, Body};
use crowds_net::safelog::Sensitive;
use crowds_proto::headers::{self, Hygiene};
use crowds_proto::policy::{self, PortPolicy};
use crowds_proto::relay::{self, ErrorKind};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Read buffer of the HTTP/1 connection to a server. hyper grows its read buffer up to
/// this size, and a response whose reader stalls pins it and a chunk of up to this size,
/// so it bounds the exit's memory per stalled download. 16 KiB is one HTTP/2 DATA frame
/// on the link; it moves bytes for the same CPU per GB as 1 MiB did.
pub const SERVER_READ_BUFFER: usize = 16 * 1024;

/// Settings of the exit.
#[derive(Debug, Clone)]
pub struct ExitConfig {
    /// Source address of outgoing connections (the jondo's peer address).
    pub source_ip: Option<IpAddr>,
    /// Allow loopback, private and other non-public destinations (tests and the demo).
    pub allow_private_destinations: bool,
    /// Time allowed to resolve and connect.
    pub connect_timeout: Duration,
    /// Time allowed for the server's response head.
    pub response_timeout: Duration,
    /// A tunnel, or a response body, that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Destinations always refused (the blender's API).
    pub deny: Vec<SocketAddr>,
    /// Destination ports allowed.
    pub ports: PortPolicy,
}

impl Default for ExitConfig {
    fn default() -> Self {
        Self {
            source_ip: None,
            allow_private_destinations: false,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            deny: Vec::new(),
            ports: PortPolicy::default(),
        }
    }
}

/// The addresses of `host:port` this exit may connect to: the port must be allowed, and
/// the name is resolved here, at the exit, and every address checked after resolution
/// (so DNS rebinding cannot slip a private address past the policy).
pub async fn resolve_checked(
    host: &str,
    port: u16,
    config: &ExitConfig,
) -> Result<Vec<SocketAddr>, ErrorKind> {
    if !config.ports.allows(port) {
        return Err(ErrorKind::ExitPolicy);
    }
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        config.connect_timeout,
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| ErrorKind::OriginUnreachable)?
    .map_err(|_| ErrorKind::OriginUnreachable)?
    .collect();
    if addrs.is_empty() {
        return Err(ErrorKind::OriginUnreachable);
    }
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| config.allow_private_destinations || policy::is_public(a.ip()))
        .filter(|a| a.port() != 0)
        .collect();
    if allowed.is_empty() {
        return Err(ErrorKind::ExitPolicy);
    }
    Ok(allowed)
}

/// Whether `addr` is the crowd's own infrastructure, which the crowd is never used
/// against: a member's peer port, or a denied address (the blender's API).
pub fn is_infrastructure(addr: &SocketAddr, config: &ExitConfig, crowd: &Crowd) -> bool {
    config.deny.contains(addr) || crowd.doc.members.iter().any(|m| m.addr == *addr)
}

/// Connects to the first reachable address, from the configured source address.
pub async fn connect(addrs: &[SocketAddr], config: &ExitConfig) -> Result<TcpStream, ErrorKind> {
    for addr in addrs {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        let Ok(socket) = socket else { continue };
        if let Some(src) = config.source_ip {
            if src.is_ipv4() == addr.is_ipv4()
                && !src.is_unspecified()
                && socket.bind(SocketAddr::new(src, 0)).is_err()
            {
                continue;
            }
        }
        if let Ok(Ok(stream)) =
            tokio::time::timeout(config.connect_timeout, socket.connect(*addr)).await
        {
            let _ = stream.set_nodelay(true);
            #[cfg(feature = "bench")]
            bench_connect_delay().await;
            return Ok(stream);
        }
    }
    Err(ErrorKind::OriginUnreachable)
}

/// Benchmark builds only (cargo feature `bench`, never in the shipped binary): a TCP
/// connect that takes `CROWDS_BENCH_CONNECT_DELAY_MS` longer, as a handshake over a link
/// with that round trip does. crowds-bench's WAN section emulates delayed links with
/// relays, where the kernel completes the handshake at once; without this, a jondo that
/// waits for its connection before answering a `CONNECT` would answer a round trip early.
#[cfg(feature = "bench")]
async fn bench_connect_delay() {
    let ms = std::env::var("CROWDS_BENCH_CONNECT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Submits a relayed request to its server and returns the server's response, or the
/// crowd error to answer. `guard` is held for the lifetime of a tunnel. Page bundles are
/// [`crate::prefetch`]'s, on top of this.
pub async fn submit<G: Send + 'static>(
    req: Request<Body>,
    config: &ExitConfig,
    crowd: &Crowd,
    guard: G,
) -> Result<Response<Body>, ErrorKind> {
    let target =
        relay::request_target(req.method(), req.uri()).map_err(|_| ErrorKind::BadRequest)?;
    tracing::debug!(
        host = %Sensitive(&target.host),
        port = target.port,
        tunnel = req.method() == http::Method::CONNECT,
        "submitting"
    );
    let mut addrs = resolve_checked(&target.host, target.port, config).await?;
    addrs.retain(|a| !is_infrastructure(a, config, crowd));
    if addrs.is_empty() {
        return Err(ErrorKind::ExitPolicy);
    }
    let stream = connect(&addrs, config).await?;
    if req.method() == http::Method::CONNECT {
        // A tunnel: the request body (the client's bytes, its first ones already here
        // when the initiator is optimistic) goes to the server, and the server's bytes
        // come back as the response body.
        let body = tunnel::to_server(req.into_body(), stream, config.idle_timeout, guard);
        return Ok(Response::new(body));
    }
    drop(guard);
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or(ErrorKind::BadRequest)?;
    let navigation = parts
        .headers
        .contains_key(crowds_proto::bundle::PREFETCH_HEADER);
    headers::sanitize_request(&mut parts.headers, Hygiene::SAFETY_NET);
    headers::trim_origin(&mut parts.headers, &parts.uri);
    if navigation {
        // The page must be parsed here, so ask for it uncompressed.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(&authority).map_err(|_| ErrorKind::BadRequest)?,
    );
    let origin_form = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    parts.uri = origin_form
        .parse::<Uri>()
        .map_err(|_| ErrorKind::BadRequest)?;
    // The connection is never reused, so say so: the server then closes first and keeps
    // the TIME_WAIT, rather than the exit, whose ephemeral ports on its one source
    // address would otherwise run out at a few hundred requests per second.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    parts.version = http::Version::HTTP_11;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(SERVER_READ_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ErrorKind::OriginUnreachable)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("origin connection ended: {e}");
        }
    });
    let resp = tokio::time::timeout(
        config.response_timeout,
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await
    .map_err(|_| ErrorKind::Timeout)?
    .map_err(|_| ErrorKind::OriginUnreachable)?;
    let (mut parts, incoming) = resp.into_parts();
    headers::sanitize_response(&mut parts.headers, Hygiene::SAFETY_NET);
    let body = body::with_idle_timeout(body::stream(incoming), config.idle_timeout);
    Ok(Response::from_parts(parts, body))
}
