//! The page of the WAN section and the origin that serves it, over plain HTTP/1.1 and
//! over HTTPS (TLS 1.3, ALPN h2) with a self-signed certificate made at start.
//!
//! One HTML document with [`OBJECTS`] embedded objects, as browsers and the exit's
//! scanner find them: stylesheets (`<link rel=stylesheet href>`), scripts
//! (`<script src>`) and images (`<img src>`), 3 to 43 KiB each, 791 KiB together. Every
//! page load gets URLs of its own (`/l/LOAD/...`), so no cache (the initiator's object
//! cache keeps objects for a minute) can answer a later load: every load is a first
//! visit. Bodies are fixed per object, so the client checks each byte. The stylesheets
//! are CSS comments and embed nothing more. The origin serves nothing else but
//! [`SMALL`], a few bytes for probes.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Embedded objects of the page.
pub const OBJECTS: usize = 40;
/// A path with a small answer, for probes (path lengths, opening links).
pub const SMALL: &str = "/small";
/// Most connections the origin serves at once (per protocol).
const MAX_CONNECTIONS: usize = 512;

/// What an embedded object is, which decides its tag, type and the browser's Accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<link rel=stylesheet href>`.
    Style,
    /// `<script src>`.
    Script,
    /// `<img src>`.
    Image,
}

impl Kind {
    fn content_type(self) -> &'static str {
        match self {
            Kind::Style => "text/css",
            Kind::Script => "text/javascript",
            Kind::Image => "image/png",
        }
    }

    /// The Accept header a browser (Firefox) sends for this kind of object.
    pub fn accept(self) -> &'static str {
        match self {
            Kind::Style => "text/css,*/*;q=0.1",
            Kind::Script => "*/*",
            Kind::Image => "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        }
    }
}

/// The Accept header of a navigation: with `text/html`, so a jondo asks for a bundle.
pub const ACCEPT_PAGE: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// One embedded object.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its kind.
    pub kind: Kind,
    /// Its path below a load's prefix, e.g. `css/0.css`.
    pub tail: String,
    /// Its body.
    pub body: Bytes,
}

/// The page: a template for the HTML and the objects' bodies.
#[derive(Debug)]
pub struct Page {
    /// The embedded objects, in document order.
    pub objects: Vec<Object>,
    by_tail: HashMap<String, usize>,
    text: String,
}

/// Size of object `i` in KiB: four stylesheets of 24-42 KiB, eight scripts of 7-43 KiB,
/// 28 images of 3-31 KiB.
fn size_kib(i: usize) -> usize {
    match i {
        0..4 => 24 + 6 * i,
        4..12 => 6 + (i * 11) % 40,
        _ => 3 + (i * 7) % 29,
    }
}

fn kind(i: usize) -> Kind {
    match i {
        0..4 => Kind::Style,
        4..12 => Kind::Script,
        _ => Kind::Image,
    }
}

/// Printable filler of `n` bytes, different per `seed`, with nothing a CSS or HTML
/// scanner would take for a reference.
fn filler(seed: usize, n: usize) -> String {
    const WORDS: [&str; 8] = [
        "crowd ", "jondo ", "blender ", "path ", "member ", "forward ", "submit ", "page ",
    ];
    let mut s = String::with_capacity(n + 8);
    let mut i = seed;
    while s.len() < n {
        s.push_str(WORDS[i % WORDS.len()]);
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(n);
    s
}

impl Page {
    /// The page of every WAN measurement.
    pub fn new() -> Self {
        let objects: Vec<Object> = (0..OBJECTS)
            .map(|i| {
                let kind = kind(i);
                let size = size_kib(i) * 1024;
                let body = match kind {
                    Kind::Style => format!("/*{}*/", filler(i, size - 4)).into_bytes(),
                    Kind::Script => format!("//{}\n", filler(i, size - 3)).into_bytes(),
                    Kind::Image => (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect(),
                };
                let tail = match kind {
                    Kind::Style => format!("css/{i}.css"),
                    Kind::Script => format!("js/{i}.js"),
                    Kind::Image => format!("img/{i}.png"),
                };
                Object {
                    kind,
                    tail,
                    body: Bytes::from(body),
                }
            })
            .collect();
        let by_tail = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.tail.clone(), i))
            .collect();
        Self {
            objects,
            by_tail,
            text: filler(999, 480),
        }
    }

    /// The path of load `load`'s page.
    pub fn page_path(load: u64) -> String {
        format!("/l/{load}/")
    }

    /// The path of object `i` in load `load`.
    pub fn object_path(&self, load: u64, i: usize) -> String {
        format!("/l/{load}/{}", self.objects[i].tail)
    }

    /// The HTML of load `load`: stylesheets and scripts in the head, images among
    /// paragraphs of text in the body (about 20 KiB).
    pub fn html(&self, load: u64) -> Bytes {
        let mut h = String::with_capacity(24 * 1024);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(h, "<title>A page of the WAN bench, load {load}</title>");
        for (i, o) in self.objects.iter().enumerate() {
            let path = self.object_path(load, i);
            match o.kind {
                Kind::Style => {
                    let _ = writeln!(h, "<link rel=\"stylesheet\" href=\"{path}\">");
                }
                Kind::Script => {
                    let _ = writeln!(h, "<script src=\"{path}\"></script>");
                }
                Kind::Image => {}
            }
        }
        h.push_str("</head>\n<body>\n<h1>Crowds</h1>\n");
        for (i, o) in self.objects.iter().enumerate() {
            if o.kind == Kind::Image {
                let path = self.object_path(load, i);
                let _ = writeln!(
                    h,
                    "<p>{}</p>\n<img src=\"{path}\" alt=\"figure {i}\" width=\"320\" height=\"200\">",
                    self.text
                );
            }
        }
        h.push_str("</body>\n</html>\n");
        Bytes::from(h)
    }

    /// Bytes of all objects together.
    pub fn object_bytes(&self) -> usize {
        self.objects.iter().map(|o| o.body.len()).sum()
    }

    /// The answer for `path`: content type and body.
    fn route(&self, path: &str) -> Option<(&'static str, Bytes)> {
        if path == SMALL {
            return Some(("text/plain", Bytes::from_static(b"ok\n")));
        }
        let rest = path.strip_prefix("/l/")?;
        let (load, tail) = rest.split_once('/')?;
        let load: u64 = load.parse().ok()?;
        if tail.is_empty() {
            return Some(("text/html; charset=utf-8", self.html(load)));
        }
        let o = &self.objects[*self.by_tail.get(tail)?];
        Some((o.kind.content_type(), o.body.clone()))
    }

    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let found = (req.method() == http::Method::GET)
            .then(|| self.route(req.uri().path()))
            .flatten();
        let (status, ctype, body) = match found {
            Some((ctype, body)) => (StatusCode::OK, ctype, body),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"no\n"),
            ),
        };
        let mut resp = Response::new(Full::new(body.clone()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        h.insert(header::CONTENT_LENGTH, body.len().into());
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        resp
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

/// The running origin.
pub struct Origin {
    /// Plain HTTP/1.1 (keep-alive).
    pub http: SocketAddr,
    /// HTTPS: TLS 1.3 with ALPN h2 only.
    pub https: SocketAddr,
    /// A client configuration that trusts the origin's certificate (for 127.0.0.1).
    pub client_tls: Arc<rustls::ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for 127.0.0.1: the server's configuration and a client
/// configuration that trusts it, both TLS 1.3 with ALPN h2.
fn tls_configs() -> Result<(rustls::ServerConfig, rustls::ClientConfig)> {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .context("self-signed certificate")?;
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        made.key_pair.serialize_der(),
    ));
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok((server, client))
}

/// Starts the origin on 127.0.0.1 (two ports chosen by the system) until `shutdown`.
pub async fn start(page: Arc<Page>, shutdown: CancellationToken) -> Result<Origin> {
    let (server_tls, client_tls) = tls_configs()?;
    let http_listener = TcpListener::bind("127.0.0.1:0").await?;
    let https_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (http, https) = (http_listener.local_addr()?, https_listener.local_addr()?);
    let plain_page = page.clone();
    crowds_net::net::spawn_accept_loop(
        http_listener,
        MAX_CONNECTIONS,
        shutdown.clone(),
        move |stream, _| {
            let page = plain_page.clone();
            async move {
                let _ = stream.set_nodelay(true);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = page.answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        },
    );
    let acceptor = TlsAcceptor::from(Arc::new(server_tls));
    crowds_net::net::spawn_accept_loop(
        https_listener,
        MAX_CONNECTIONS,
        shutdown,
        move |stream, _| {
            let (page, acceptor) = (page.clone(), acceptor.clone());
            async move {
                let _ = stream.set_nodelay(true);
                let Ok(Ok(tls)) = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    acceptor.accept(stream),
                )
                .await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = page.answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        },
    );
    Ok(Origin {
        http,
        https,
        client_tls: Arc::new(client_tls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_realistic_in_size_and_names_every_object() {
        let page = Page::new();
        let total = page.object_bytes();
        assert!((512 << 10..=1 << 20).contains(&total), "{total}");
        assert_eq!(page.objects.len(), OBJECTS);
        let html = String::from_utf8(page.html(7).to_vec()).expect("utf-8");
        for i in 0..OBJECTS {
            assert!(html.contains(&format!("\"{}\"", page.object_path(7, i))));
        }
        assert_eq!(html.matches("<link rel=\"stylesheet\"").count(), 4);
        assert_eq!(html.matches("<script src=").count(), 8);
        assert_eq!(html.matches("<img src=").count(), 28);
        for o in &page.objects {
            assert!((3 << 10..=50 << 10).contains(&o.body.len()));
            if o.kind != Kind::Image {
                let text = String::from_utf8_lossy(&o.body);
                assert!(!text.contains("url(") && !text.contains("@import"));
            }
        }
    }

    #[test]
    fn routes_answer_pages_objects_and_nothing_else() {
        let page = Page::new();
        let (ctype, body) = page.route("/l/3/").expect("page");
        assert_eq!((ctype, body), ("text/html; charset=utf-8", page.html(3)));
        let (_, body) = page.route(&page.object_path(3, 5)).expect("object");
        assert_eq!(body, page.objects[5].body);
        assert!(page.route("/l/3/css/99.css").is_none());
        assert!(page.route("/etc/passwd").is_none());
        assert!(page.route("/l/x/").is_none());
    }
}
