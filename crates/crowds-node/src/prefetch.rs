//! The timing defence: page bundles at the exit, and the initiator's object cache.
//!
//! At the exit ([`bundle`]): an HTML page fetched for a GET that asked for it is parsed
//! while it streams (lol_html), each embedded object (images and srcsets, stylesheets,
//! icons, scripts, media posters) is announced before the page bytes that mention it,
//! and after the page the exit fetches the objects itself, under the same exit policy,
//! bounded in count and bytes, and sends them on the same response.
//!
//! At the initiator ([`unbundle`], [`ObjectCache`]): the page streams to the browser as
//! usual; announced objects go into a short-lived cache, and the browser's follow-up
//! requests for them are answered here, never sent into the crowd. So a collaborator on
//! the path sees one request and one (longer) response, and cannot time the gap between
//! the page and the browser's next requests. HTTPS pages cannot get this defence: jondos
//! cannot read them.

use crate::body::{self, Body, BoxError};
use crate::exit::{self, ExitConfig};
use crate::jondo::Crowd;
use bytes::Bytes;
use crowds_proto::bundle::{self, Decoder, Frame, BUNDLE_HEADER, PAGE_LENGTH_HEADER};
use crowds_proto::html::Scanner;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use crowds_proto::bundle::PREFETCH_HEADER;

/// Most objects fetched for one page.
pub const MAX_OBJECTS: usize = crowds_proto::html::MAX_OBJECTS;
/// Largest object fetched.
pub const MAX_OBJECT_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of objects fetched for one page.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of objects an initiator keeps at once.
pub const MAX_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// How long an unused object is kept.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long the browser's request waits for an announced object still on its way.
pub const ANNOUNCED_WAIT: Duration = Duration::from_secs(30);
/// Frames buffered between the bundle's producer and the link.
const CHANNEL_FRAMES: usize = 16;

/// Whether this relayed request asks for a page bundle.
pub fn wants_bundle<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && req.headers().contains_key(PREFETCH_HEADER)
}

/// Marks a browser request as a navigation that may be answered with a bundle: a GET
/// whose Accept names HTML. Every initiator does this the same way.
pub fn mark_navigation<B>(req: &mut Request<B>) {
    let html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if req.method() == Method::GET && html {
        req.headers_mut()
            .insert(PREFETCH_HEADER, HeaderValue::from_static("1"));
    }
}

/// The URL form used on both sides, so announcements and requests match.
pub fn normalize(url: &str) -> Option<String> {
    crowds_proto::html::normalize(url)
}

type FrameResult = Result<BodyFrame<Bytes>, BoxError>;

fn data(page: bool, bytes: &[u8]) -> FrameResult {
    Ok(BodyFrame::data(Bytes::from(bundle::encode_data(
        page, bytes,
    ))))
}

fn control(frame: &Frame) -> Option<FrameResult> {
    frame
        .encode()
        .ok()
        .map(|b| Ok(BodyFrame::data(Bytes::from(b))))
}

/// Turns the server's answer to a navigation GET into a page bundle, if it is an HTML
/// page (200, uncompressed); anything else is returned unchanged.
pub fn bundle(
    page_url: &Uri,
    resp: Response<Body>,
    config: ExitConfig,
    crowd: Arc<Crowd>,
) -> Response<Body> {
    let Some(scanner) = Scanner::new(&page_url.to_string()) else {
        return resp;
    };
    if resp.status() != StatusCode::OK || !body::is_plain_html(resp.headers()) {
        return resp;
    }
    let (mut parts, page) = resp.into_parts();
    if let Some(len) = parts.headers.remove(header::CONTENT_LENGTH) {
        parts.headers.insert(PAGE_LENGTH_HEADER, len);
    }
    parts
        .headers
        .insert(BUNDLE_HEADER, HeaderValue::from_static("1"));
    let (tx, rx) = mpsc::channel::<FrameResult>(CHANNEL_FRAMES);
    tokio::spawn(produce(page, scanner, tx, config, crowd));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

async fn produce(
    mut page: Body,
    mut scanner: Scanner,
    tx: mpsc::Sender<FrameResult>,
    config: ExitConfig,
    crowd: Arc<Crowd>,
) {
    let mut announced = Vec::new();
    loop {
        match page.frame().await {
            Some(Ok(frame)) => {
                let Ok(bytes) = frame.into_data() else {
                    continue;
                };
                // Announce before the bytes that mention the objects reach the browser.
                for url in scanner.feed(&bytes) {
                    if let Some(f) = control(&Frame::Announce(url.clone())) {
                        if tx.send(f).await.is_err() {
                            return;
                        }
                    }
                    announced.push(url);
                }
                if tx.send(data(true, &bytes)).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                // The page was cut: the client must see an error, not a short page.
                let _ = tx.send(Err(e)).await;
                return;
            }
            None => break,
        }
    }
    for url in scanner.finish() {
        if let Some(f) = control(&Frame::Announce(url.clone())) {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        announced.push(url);
    }
    let Some(end) = control(&Frame::PageEnd) else {
        return;
    };
    if tx.send(end).await.is_err() {
        return;
    }
    let mut budget = MAX_BUNDLE_BYTES;
    for url in announced {
        if !send_object(&url, &tx, &config, &crowd, &mut budget).await {
            let Some(f) = control(&Frame::ObjectFailed(url)) else {
                return;
            };
            if tx.send(f).await.is_err() {
                return;
            }
        }
    }
}

/// Fetches one object and sends it; false if it could not be sent whole.
async fn send_object(
    url: &str,
    tx: &mpsc::Sender<FrameResult>,
    config: &ExitConfig,
    crowd: &Crowd,
    budget: &mut usize,
) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let mut req = Request::new(body::empty());
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let Ok(resp) = exit::fetch(req, config, crowd).await else {
        return false;
    };
    let (parts, mut obj) = resp.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
        .take(bundle::MAX_OBJECT_HEADERS)
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let head = Frame::ObjectHead {
        url: url.to_string(),
        status: parts.status.as_u16(),
        headers,
    };
    let Some(head) = control(&head) else {
        return false;
    };
    if tx.send(head).await.is_err() {
        return false;
    }
    let mut size = 0usize;
    loop {
        match obj.frame().await {
            Some(Ok(frame)) => {
                let Ok(bytes) = frame.into_data() else {
                    continue;
                };
                size += bytes.len();
                if size > MAX_OBJECT_BYTES || size > *budget {
                    return false;
                }
                if tx.send(data(false, &bytes)).await.is_err() {
                    return false;
                }
            }
            Some(Err(_)) => return false,
            None => break,
        }
    }
    *budget -= size;
    let Some(end) = control(&Frame::ObjectEnd) else {
        return false;
    };
    tx.send(end).await.is_ok()
}

/// An object received in a bundle.
#[derive(Debug)]
pub struct Object {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Object {
    /// The response the browser gets.
    pub fn response(&self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        for (k, v) in &self.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        resp
    }
}

#[derive(Debug, Clone)]
enum State {
    Pending,
    Ready(Arc<Object>),
    Failed,
}

struct Entry {
    state: watch::Sender<State>,
    since: Instant,
}

/// The initiator's store of announced and received objects.
#[derive(Default)]
pub struct ObjectCache {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    bytes: Mutex<usize>,
}

impl ObjectCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn announce(&self, url: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.since) < CACHE_TTL);
        entries
            .entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    state: watch::channel(State::Pending).0,
                    since: now,
                })
            })
            .clone()
    }

    fn get(&self, url: &str) -> Option<Arc<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }

    fn remove(&self, url: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(url);
    }

    /// Number of objects announced or held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The browser asks for `url`: if an exit announced it, wait for it (bounded) and
    /// answer locally. `None` means: send the request into the crowd as usual.
    pub async fn take(&self, url: &str) -> Option<Response<Body>> {
        let entry = self.get(url)?;
        let mut rx = entry.state.subscribe();
        let waited = tokio::time::timeout(
            ANNOUNCED_WAIT,
            rx.wait_for(|s| !matches!(s, State::Pending)),
        )
        .await;
        let state = match waited {
            Ok(Ok(s)) => s.clone(),
            _ => State::Failed,
        };
        self.remove(url);
        match state {
            State::Ready(obj) => {
                let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
                *bytes = bytes.saturating_sub(obj.body.len());
                Some(obj.response())
            }
            _ => None,
        }
    }
}

/// Unpacks a page bundle from the crowd: the page streams to the browser; objects go to
/// `cache`. Responses that are not bundles are returned unchanged.
pub fn unbundle(resp: Response<Body>, cache: Arc<ObjectCache>) -> Response<Body> {
    if !resp.headers().contains_key(BUNDLE_HEADER) {
        return resp;
    }
    let (mut parts, crowd_body) = resp.into_parts();
    parts.headers.remove(BUNDLE_HEADER);
    if let Some(len) = parts.headers.remove(PAGE_LENGTH_HEADER) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    let (tx, rx) = mpsc::channel::<FrameResult>(CHANNEL_FRAMES);
    tokio::spawn(consume(crowd_body, tx, cache));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

struct Current {
    entry: Arc<Entry>,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

async fn consume(mut crowd_body: Body, tx: mpsc::Sender<FrameResult>, cache: Arc<ObjectCache>) {
    let mut decoder = Decoder::new();
    let mut page = Some(tx);
    let mut announced: Vec<Arc<Entry>> = Vec::new();
    let mut current: Option<Current> = None;
    let outcome: Result<(), BoxError> = async {
        loop {
            let Some(frame) = crowd_body.frame().await else {
                break;
            };
            let Ok(bytes) = frame?.into_data() else {
                continue;
            };
            decoder.push(&bytes);
            while let Some(f) = decoder.next_frame()? {
                match f {
                    Frame::PageData(d) => {
                        if let Some(tx) = &page {
                            if tx.send(Ok(BodyFrame::data(Bytes::from(d)))).await.is_err() {
                                page = None;
                            }
                        }
                    }
                    Frame::PageEnd => page = None,
                    Frame::Announce(url) => {
                        if let Some(url) = normalize(&url) {
                            announced.push(cache.announce(&url));
                        }
                    }
                    Frame::ObjectHead {
                        url,
                        status,
                        headers,
                    } => {
                        let Some(entry) = normalize(&url).and_then(|u| cache.get(&u)) else {
                            current = None;
                            continue;
                        };
                        current = Some(Current {
                            entry,
                            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                            headers: headers
                                .into_iter()
                                .filter_map(|(k, v)| {
                                    Some((
                                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                                        HeaderValue::from_bytes(&v).ok()?,
                                    ))
                                })
                                .collect(),
                            body: Vec::new(),
                        });
                    }
                    Frame::ObjectData(d) => {
                        if let Some(c) = current.as_mut() {
                            if c.body.len() + d.len() > MAX_OBJECT_BYTES {
                                c.entry.state.send_replace(State::Failed);
                                current = None;
                            } else {
                                c.body.extend_from_slice(&d);
                            }
                        }
                    }
                    Frame::ObjectEnd => {
                        if let Some(c) = current.take() {
                            let fits = {
                                let mut held =
                                    cache.bytes.lock().unwrap_or_else(|p| p.into_inner());
                                let fits = *held + c.body.len() <= MAX_CACHE_BYTES;
                                if fits {
                                    *held += c.body.len();
                                }
                                fits
                            };
                            let state = if fits {
                                State::Ready(Arc::new(Object {
                                    status: c.status,
                                    headers: c.headers,
                                    body: Bytes::from(c.body),
                                }))
                            } else {
                                State::Failed
                            };
                            c.entry.state.send_replace(state);
                        }
                    }
                    Frame::ObjectFailed(url) => {
                        current = None;
                        if let Some(e) = normalize(&url).and_then(|u| cache.get(&u)) {
                            e.state.send_replace(State::Failed);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        if let Some(tx) = &page {
            // Cut before the page was complete: the browser must see an error.
            let _ = tx.send(Err(e)).await;
        }
    } else if let Some(tx) = &page {
        let _ = tx
            .send(Err("the page bundle ended before the page did".into()))
            .await;
    }
    // Whatever did not arrive will not: let waiting requests go to the crowd instead.
    for entry in announced {
        entry.state.send_if_modified(|s| {
            if matches!(s, State::Pending) {
                *s = State::Failed;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cache_answers_announced_objects_and_falls_back_on_failure() {
        let cache = Arc::new(ObjectCache::new());
        let entry = cache.announce("http://a.example/x.png");
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.take("http://a.example/x.png").await })
        };
        entry.state.send_replace(State::Ready(Arc::new(Object {
            status: StatusCode::OK,
            headers: vec![],
            body: Bytes::from_static(b"png"),
        })));
        let resp = waiter.await.expect("join").expect("served locally");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"png");
        assert!(cache.is_empty(), "served once");
        let failed = cache.announce("http://a.example/y.css");
        failed.state.send_replace(State::Failed);
        assert!(cache.take("http://a.example/y.css").await.is_none());
        assert!(cache
            .take("http://a.example/never-announced")
            .await
            .is_none());
    }
}
