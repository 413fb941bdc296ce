//! The browser model of the WAN section: one page load, timed from the first connection
//! to the last byte of the last object, every body checked byte for byte.
//!
//! Plain HTTP ([`load_http`]), as a browser with [`CONNECTIONS`] connections per server:
//! 1. open a connection (to the proxy, or to the origin) and GET the page with a
//!    navigation's `Accept: text/html,...`;
//! 2. once the whole page has arrived (and matched), open the other C − 1 connections
//!    at once and fetch every object from one shared queue: each connection takes the
//!    next object as soon as its previous answer is complete (HTTP/1.1 keep-alive, no
//!    pipelining), with the Accept a browser sends for its kind. The page's own
//!    connection takes objects at once. A connection the server closed (tinyproxy
//!    closes after every answer) is replaced by a new one; a request that fails on a
//!    reused connection is sent once more on a new one, as browsers do.
//!
//! The object list is the page's own (the client checked the HTML byte for byte, so it
//! names exactly these); it is used only after the HTML arrived.
//!
//! HTTPS ([`load_https`]): one connection per page load: TCP to the proxy and
//! `CONNECT host:port` (or TCP to the origin), TLS 1.3 with ALPN h2, GET the page, then
//! every object at once as HTTP/2 streams on that connection. The HTTP/2 windows are a
//! browser's (Chromium: 6 MiB per stream, 15 MiB per connection), so flow control never
//! waits for a round trip.

use super::page::{Page, ACCEPT_PAGE};
use crate::client::{open_tunnel, Sender};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Connections per server for plain HTTP (what browsers open).
pub const CONNECTIONS: usize = 6;
/// Longest page load before it counts as failed.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 receive window per stream (Chromium's).
const H2_STREAM_WINDOW: u32 = 6 * 1024 * 1024;
/// HTTP/2 receive window per connection (Chromium's).
const H2_CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// How the client reaches the origin.
#[derive(Debug, Clone, Copy)]
pub struct Way {
    /// Where the client connects: the origin (or its delay relay), or a proxy.
    pub connect: SocketAddr,
    /// Through an HTTP proxy at `connect`: plain HTTP in absolute form, HTTPS in a
    /// `CONNECT` tunnel.
    pub proxy: bool,
}

/// A GET as a browser sends it; `host` for HTTP/1.1 (HTTP/2 carries the authority in
/// the URI).
fn browser_request(uri: String, host: Option<&str>, accept: &str) -> Result<Request<Empty<Bytes>>> {
    let mut req = Request::get(uri);
    if let Some(host) = host {
        req = req.header(header::HOST, host);
    }
    Ok(req
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, accept)
        .header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.5")
        .body(Empty::new())?)
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn http1(way: &Way) -> Result<Sender> {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp(way.connect).await?)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` on `sender`, reads the whole answer and checks it is 200 with `expected`
/// as its body. Returns whether the server keeps the connection open.
async fn fetch(sender: &mut Sender, req: Request<Empty<Bytes>>, expected: &[u8]) -> Result<bool> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let close = resp.version() < http::Version::HTTP_11
        || resp
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let body = resp.into_body().collect().await?.to_bytes();
    check(status, &body, expected)?;
    Ok(!close)
}

fn check(status: StatusCode, body: &[u8], expected: &[u8]) -> Result<()> {
    if status != StatusCode::OK {
        bail!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(160)]).trim()
        );
    }
    if body != expected {
        bail!(
            "body of {} bytes differs from the expected {} bytes",
            body.len(),
            expected.len()
        );
    }
    Ok(())
}

/// One plain-HTTP page load (the schedule in the module doc); `origin` is the authority
/// the URLs name. Returns the time from the first connect to the last object's end.
pub async fn load_http(
    way: Way,
    origin: SocketAddr,
    page: Arc<Page>,
    load: u64,
) -> Result<Duration> {
    tokio::time::timeout(LOAD_TIMEOUT, load_http_inner(way, origin, page, load))
        .await
        .map_err(|_| anyhow!("page load timed out after {LOAD_TIMEOUT:?}"))?
}

async fn load_http_inner(
    way: Way,
    origin: SocketAddr,
    page: Arc<Page>,
    load: u64,
) -> Result<Duration> {
    let authority = origin.to_string();
    let uri = move |path: &str| {
        if way.proxy {
            format!("http://{authority}{path}")
        } else {
            path.to_string()
        }
    };
    let started = Instant::now();
    let mut first = http1(&way).await?;
    let host = origin.to_string();
    let req = browser_request(uri(&Page::page_path(load)), Some(&host), ACCEPT_PAGE)?;
    let keep = fetch(&mut first, req, &page.html(load))
        .await
        .context("the page")?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let mut first = keep.then_some(first);
    for _ in 0..CONNECTIONS {
        let (page, next, uri) = (page.clone(), next.clone(), uri.clone());
        let mut conn = first.take();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(object) = page.objects.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let req = || {
                    browser_request(
                        uri(&page.object_path(load, i)),
                        Some(&origin.to_string()),
                        object.kind.accept(),
                    )
                };
                let reused = conn.take().filter(|s| !s.is_closed());
                let was_reused = reused.is_some();
                let mut sender = match reused {
                    Some(s) => s,
                    None => http1(&way).await?,
                };
                let mut fetched = fetch(&mut sender, req()?, &object.body).await;
                if fetched.is_err() && was_reused {
                    // The server closed the idle connection as we sent: once more.
                    sender = http1(&way).await?;
                    fetched = fetch(&mut sender, req()?, &object.body).await;
                }
                let kept = fetched.with_context(|| format!("object {i}"))?;
                conn = kept.then_some(sender);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// One HTTPS page load (the schedule in the module doc) to `origin` (which the
/// certificate in `tls` names as 127.0.0.1). Returns the time from the first connect
/// to the last object's end.
pub async fn load_https(
    way: Way,
    origin: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    page: Arc<Page>,
    load: u64,
) -> Result<Duration> {
    tokio::time::timeout(LOAD_TIMEOUT, load_https_inner(way, origin, tls, page, load))
        .await
        .map_err(|_| anyhow!("page load timed out after {LOAD_TIMEOUT:?}"))?
}

async fn load_https_inner(
    way: Way,
    origin: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    page: Arc<Page>,
    load: u64,
) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = tcp(way.connect).await?;
    if way.proxy {
        stream = open_tunnel(stream, origin).await?;
    }
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into());
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .context("TLS handshake with the origin")?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("the origin did not choose h2");
    }
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake(TokioIo::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = origin.to_string();
    let get = {
        let (sender, authority) = (sender.clone(), authority.clone());
        move |path: String, accept: &'static str, expected: Bytes| {
            let mut sender = sender.clone();
            let req = browser_request(format!("https://{authority}{path}"), None, accept);
            async move {
                let req = req?;
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                check(status, &body, &expected).with_context(|| path.clone())
            }
        }
    };
    get(Page::page_path(load), ACCEPT_PAGE, page.html(load)).await?;
    let mut streams = tokio::task::JoinSet::new();
    for (i, o) in page.objects.iter().enumerate() {
        streams.spawn(get(
            page.object_path(load, i),
            o.kind.accept(),
            o.body.clone(),
        ));
    }
    while let Some(done) = streams.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    /// Both clients load the page from the origin, directly and through a delay relay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_protocols_load_the_whole_page() {
        let shutdown = CancellationToken::new();
        let page = Arc::new(Page::new());
        let origin = super::super::page::start(page.clone(), shutdown.clone())
            .await
            .expect("origin");
        let direct = Way {
            connect: origin.http,
            proxy: false,
        };
        load_http(direct, origin.http, page.clone(), 1)
            .await
            .expect("plain HTTP");
        let tls_way = Way {
            connect: origin.https,
            proxy: false,
        };
        load_https(
            tls_way,
            origin.https,
            origin.client_tls.clone(),
            page.clone(),
            2,
        )
        .await
        .expect("HTTPS");
        let delay = super::super::delay::Delay::default();
        delay.set(Duration::from_millis(5));
        let relay = super::super::delay::start(
            IpAddr::from([127, 0, 0, 1]),
            origin.https,
            delay,
            shutdown.clone(),
        )
        .await
        .expect("relay");
        let took = load_https(
            Way {
                connect: relay,
                proxy: false,
            },
            relay,
            origin.client_tls.clone(),
            page,
            3,
        )
        .await
        .expect("HTTPS through the relay");
        // Connect, TLS, page, objects: four round trips of 10 ms at least.
        assert!(took >= Duration::from_millis(40), "{took:?}");
        shutdown.cancel();
    }
}
