//! The timing defence and header hygiene hold against a misbehaving origin and against
//! clients that tunnel plain HTTP (issue 14), on a real crowd of three jondo processes
//! with `--strip-active-content`:
//!
//! - an announced object the exit could not deliver (the server cut it) is answered by
//!   the initiator with 502 and is never requested through the crowd a second time;
//! - an object from a page bundle loses its `Set-Cookie`, as any response does;
//! - what a bundled stylesheet uses comes with the page too;
//! - a gzip-compressed page still loses its scripts;
//! - conditional and login headers and a cross-site `Origin` never reach the server,
//!   and `Accept`/`Accept-Encoding` arrive in their common forms;
//! - plain HTTP sent through SOCKS (`curl --socks5-hostname`) and through a CONNECT
//!   tunnel (`curl --proxytunnel`) arrives cleaned like proxied HTTP, and its page's
//!   objects come from the bundle.
//!
//! The origin is a small recording HTTP server in this file.

use crowds_testkit::web;

use bytes::Bytes;
use crowds_testkit::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use web::*;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const N: usize = 3;
const CURL_SECONDS: u64 = 60;

type OriginBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// One request as the origin saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A recording origin that misbehaves on some routes.
struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PAGE: &str = "<!doctype html><html><head><title>t</title>\
    <link rel=stylesheet href=\"/s.css\"></head><body>\
    <p>page</p><img src=\"/img/cookie.png\"><img src=\"/img/cut.png\"></body></html>";

fn gzip_page() -> Vec<u8> {
    let page = "<html><body><script>window.leak = 1</script><p>compressed page</p></body></html>";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(page.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

fn respond(ctype: &str, body: impl Into<Bytes>) -> Response<OriginBody> {
    let body: Bytes = body.into();
    let mut resp = Response::new(
        http_body_util::Full::new(body.clone())
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, ctype.parse().expect("type"));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    resp
}

fn route(path: &str) -> Response<OriginBody> {
    match path {
        "/page" => respond("text/html", PAGE),
        "/s.css" => respond("text/css", "body { background: url(\"/bg.png\") }"),
        "/bg.png" => respond("image/png", png(4, 4)),
        "/img/cookie.png" => {
            let mut r = respond("image/png", png(8, 8));
            r.headers_mut().insert(
                header::SET_COOKIE,
                "tracker=from-an-image; Path=/".parse().expect("cookie"),
            );
            r
        }
        "/img/cut.png" => {
            // Announces 4,000 bytes, sends 100, then the connection breaks.
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from(vec![7u8; 100]))),
                Err(std::io::Error::other("cut by the origin")),
            ];
            let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, "image/png".parse().expect("type"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, 4000usize.into());
            r
        }
        "/gz" => {
            let mut r = respond("text/html; charset=utf-8", gzip_page());
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, "gzip".parse().expect("coding"));
            r
        }
        _ => respond("text/plain", "ok\n"),
    }
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = tokio::net::TcpListener::bind(free_local_addr())
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        record.lock().expect("seen").push(Seen {
                            path: path.clone(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect(),
                        });
                        let path = req.uri().path().to_string();
                        async move { Ok::<_, Infallible>(route(&path)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Hostile { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

const NAVIGATION: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timing_defence_and_hygiene_hold() {
    let origin = Hostile::start().await;
    let crowd = Crowd::builder(KIT, N)
        .jondo_args(&["--strip-active-content"])
        .start()
        .await;
    let initiator = &crowd.jondos[0];
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. The page arrives with its bundle; the cut object is answered here with 502.
    let served_before = counter(initiator.control, "served_from_bundles").await;
    let mut client = HttpClient::connect(initiator.proxy)
        .await
        .expect("connect proxy");
    let (status, _, page) = client
        .get(&origin.url("/page"), &[NAVIGATION])
        .await
        .expect("page");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&page), PAGE);
    let (status, headers, body) = client
        .get(&origin.url("/img/cookie.png"), &[("accept", "image/*")])
        .await
        .expect("bundled image");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), png(8, 8).len());
    assert!(
        headers.get(header::SET_COOKIE).is_none(),
        "a bundled object kept its Set-Cookie: {headers:?}"
    );
    let (status, _, _) = client
        .get(&origin.url("/img/cut.png"), &[("accept", "image/*")])
        .await
        .expect("cut image");
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "an undelivered object must be an error from the initiator"
    );
    assert_eq!(
        origin.seen("/img/cut.png").len(),
        1,
        "the cut object was requested through the crowd after the exit's own fetch"
    );
    assert_eq!(origin.seen("/img/cookie.png").len(), 1);
    // What the stylesheet uses came with the page too (one level deep).
    for (path, accept) in [("/s.css", "text/css"), ("/bg.png", "image/*")] {
        let (status, _, _) = client
            .get(&origin.url(path), &[("accept", accept)])
            .await
            .expect("stylesheet object");
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(origin.seen(path).len(), 1, "{path} was requested twice");
    }
    assert_eq!(
        counter(initiator.control, "served_from_bundles").await - served_before,
        3,
        "the image, the stylesheet and its background come from the bundle"
    );
    assert_eq!(
        counter(initiator.control, "bundle_objects_undelivered").await,
        1
    );

    // 2. A gzip page loses its scripts all the same.
    let (status, headers, body) = client
        .get(
            &origin.url("/gz"),
            &[NAVIGATION, ("accept-encoding", "gzip")],
        )
        .await
        .expect("gzip page");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert!(text.contains("compressed page"), "{text}");
    assert!(
        !text.contains("<script") && !text.contains("leak"),
        "{text}"
    );

    // 3. State headers, cross-site Origin and exact Accept lists never arrive.
    let (status, _, _) = client
        .get(
            &origin.url("/echo?proxy"),
            &[
                ("if-none-match", "\"tracking-etag\""),
                ("if-modified-since", "Tue, 01 Dec 2026 17:41:03 GMT"),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("cookie", "session=secret"),
                ("origin", "http://previous-site.example"),
                ("accept", "application/x-rare-client, */*"),
                ("accept-encoding", "gzip, deflate, br, zstd"),
            ],
        )
        .await
        .expect("echo");
    assert_eq!(status, StatusCode::OK);
    let hit = origin.seen("/echo?proxy").pop().expect("echo arrived");
    for gone in [
        "if-none-match",
        "if-modified-since",
        "authorization",
        "cookie",
        "origin",
    ] {
        assert!(
            hit.header(gone).is_none(),
            "{gone} reached the server: {hit:?}"
        );
    }
    assert_eq!(hit.header("accept"), Some("*/*"));
    assert_eq!(hit.header("accept-encoding"), Some("gzip, deflate, br"));

    // 4. Plain HTTP through SOCKS and through CONNECT: cleaned like proxied HTTP.
    let before = counter(initiator.control, "plain_http_in_tunnels").await;
    let socks = initiator.socks.to_string();
    let proxy = format!("http://{}", initiator.proxy);
    for (name, via, path) in [
        (
            "socks",
            vec!["--socks5-hostname", socks.as_str()],
            "/echo?socks",
        ),
        (
            "connect",
            vec!["--proxytunnel", "--proxy", proxy.as_str()],
            "/echo?connect",
        ),
    ] {
        let mut a = curl_base(CURL_SECONDS);
        a.extend(args(&via));
        a.extend(args(&[
            "-H",
            "Cookie: session=secret",
            "-H",
            "Referer: http://previous-site.example/private",
            "-A",
            "SecretBrowser/1.0 (my own machine)",
            &origin.url(path),
        ]));
        let out = run_tool(
            &format!("curl-{name}"),
            CURL,
            &a,
            dir.path(),
            Duration::from_secs(CURL_SECONDS + 10),
        )
        .await;
        out.assert_ok(name);
        assert_eq!(out.stdout, "ok\n", "{name}");
        let hit = origin.seen(path).pop().expect("tunnelled request arrived");
        assert!(hit.header("cookie").is_none(), "{name}: {hit:?}");
        assert!(hit.header("referer").is_none(), "{name}: {hit:?}");
        assert_eq!(
            hit.header("user-agent"),
            Some(crowds_proto::headers::CROWD_USER_AGENT),
            "{name}"
        );
    }
    assert!(counter(initiator.control, "plain_http_in_tunnels").await >= before + 2);

    // 5. A page fetched through SOCKS gets its objects from the bundle too.
    let bundled = counter(initiator.control, "served_from_bundles").await;
    let mut a = curl_base(CURL_SECONDS);
    a.extend(args(&[
        "--socks5-hostname",
        &socks,
        "-H",
        "Accept: text/html",
        "-o",
        "/dev/null",
        &origin.url("/page?socks"),
        "--next",
        "--socks5-hostname",
        &socks,
        "-H",
        "Accept: image/*",
        "-o",
        "/dev/null",
        &origin.url("/img/cookie.png"),
    ]));
    let out = run_tool(
        "curl-socks-page",
        CURL,
        &a,
        dir.path(),
        Duration::from_secs(70),
    )
    .await;
    out.assert_ok("page and object through SOCKS");
    assert_eq!(
        origin.seen("/img/cookie.png").len(),
        2,
        "the second page's object was fetched by the exit, once"
    );
    assert!(counter(initiator.control, "served_from_bundles").await > bundled);
}
