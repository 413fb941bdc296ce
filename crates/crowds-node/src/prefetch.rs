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
/// Largest object fetched. An announced object larger than this reaches the browser
/// as an error (it is never requested through the crowd afterwards).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of objects fetched for one page.
pub const MAX_BUNDLE_BYTES: usize = 48 * 1024 * 1024;
/// Objects of one page the exit fetches at once (what a browser does per server).
pub const OBJECT_FETCHES: usize = 6;
/// Most bytes of objects an initiator keeps at once.
pub const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Most objects an initiator keeps (announced or received) at once.
pub const MAX_CACHE_ENTRIES: usize = 4 * MAX_OBJECTS;
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
    send_objects(announced, &tx, &config, &crowd).await;
}

/// An object fetched whole by the exit, ready to be framed.
struct Fetched {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    stylesheet: bool,
}

/// Fetches the announced objects, [`OBJECT_FETCHES`] at a time, and sends each whole as
/// soon as it is complete (frames of two objects never interleave). Stylesheets are
/// read for the objects they embed (fonts, images, imports), one level deep: those are
/// announced before the stylesheet itself is sent, so the browser never asks for them
/// before the initiator knows they are coming.
async fn send_objects(
    announced: Vec<String>,
    tx: &mpsc::Sender<FrameResult>,
    config: &ExitConfig,
    crowd: &Arc<Crowd>,
) {
    let mut seen: std::collections::HashSet<String> = announced.iter().cloned().collect();
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(MAX_BUNDLE_BYTES));
    let mut queue: std::collections::VecDeque<String> = announced.into();
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        while running.len() < OBJECT_FETCHES {
            let Some(url) = queue.pop_front() else { break };
            let (config, crowd, budget) = (config.clone(), crowd.clone(), budget.clone());
            running.push(async move {
                let fetched = fetch_object(&url, &config, &crowd, &budget).await;
                (url, fetched)
            });
        }
        let Some((url, fetched)) = futures_util::StreamExt::next(&mut running).await else {
            return;
        };
        let frames = match fetched {
            Some(obj) => {
                let mut frames = Vec::new();
                if obj.stylesheet {
                    let css = String::from_utf8_lossy(&obj.body);
                    for found in crowds_proto::css::stylesheet_urls(&css, &url) {
                        if seen.len() >= MAX_OBJECTS {
                            break;
                        }
                        if seen.insert(found.clone()) {
                            frames.push(Frame::Announce(found.clone()));
                            queue.push_back(found);
                        }
                    }
                }
                frames.push(Frame::ObjectHead {
                    url,
                    status: obj.status,
                    headers: obj.headers,
                });
                frames.extend(
                    obj.body
                        .chunks(bundle::MAX_FRAME_PAYLOAD)
                        .map(|c| Frame::ObjectData(c.to_vec())),
                );
                frames.push(Frame::ObjectEnd);
                frames
            }
            None => vec![Frame::ObjectFailed(url)],
        };
        for f in frames {
            let encoded = match &f {
                Frame::ObjectData(d) => data(false, d),
                other => match control(other) {
                    Some(e) => e,
                    None => return,
                },
            };
            if tx.send(encoded).await.is_err() {
                return;
            }
        }
    }
}

/// Fetches one object whole; `None` if it failed, or is larger than
/// [`MAX_OBJECT_BYTES`] or what is left of the bundle's `budget`.
async fn fetch_object(
    url: &str,
    config: &ExitConfig,
    crowd: &Crowd,
    budget: &std::sync::atomic::AtomicUsize,
) -> Option<Fetched> {
    use std::sync::atomic::Ordering;
    let uri = url.parse::<Uri>().ok()?;
    let mut req = Request::new(body::empty());
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let resp = exit::fetch(req, config, crowd).await.ok()?;
    let (parts, mut obj) = resp.into_parts();
    let stylesheet = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/css"))
        && !parts.headers.contains_key(header::CONTENT_ENCODING);
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
        .take(bundle::MAX_OBJECT_HEADERS)
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let mut body = Vec::new();
    while let Some(frame) = obj.frame().await {
        let Ok(bytes) = frame.ok()?.into_data() else {
            continue;
        };
        if body.len() + bytes.len() > MAX_OBJECT_BYTES {
            return None;
        }
        // Take the bytes from the bundle's budget before holding them.
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes.len())
            })
            .ok()?;
        body.extend_from_slice(&bytes);
    }
    Some(Fetched {
        status: parts.status.as_u16(),
        headers,
        body,
        stylesheet,
    })
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
    /// The browser got it once: it stays for repeated requests (the same image twice,
    /// identical frames) but is the first to go when room is needed.
    served: std::sync::atomic::AtomicBool,
}

/// What the initiator answers for a browser request, when it answers it itself.
pub enum Local {
    /// The object, as the exit sent it with its page.
    Object(Response<Body>),
    /// The exit announced the object but it did not arrive whole (the exit could not
    /// fetch it, or the bundle was cut or altered on the path).
    Undelivered,
    /// The exit announced the object but it did not arrive within [`ANNOUNCED_WAIT`].
    TimedOut,
}

#[derive(Default)]
struct Held {
    entries: HashMap<String, Arc<Entry>>,
    /// Bytes of the objects in `Ready` entries.
    bytes: usize,
}

impl Held {
    /// Drops entries older than [`CACHE_TTL`], giving back their bytes.
    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = now.duration_since(e.since) < CACHE_TTL;
            if !keep {
                freed += ready_bytes(e);
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl Held {
    /// Drops objects the browser already got, oldest first, until `size` more bytes fit.
    fn evict_served(&mut self, size: usize) {
        let mut served: Vec<(Instant, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.served.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(url, e)| (e.since, url.clone()))
            .collect();
        served.sort();
        for (_, url) in served {
            if self.bytes + size <= MAX_CACHE_BYTES {
                return;
            }
            if let Some(e) = self.entries.remove(&url) {
                self.bytes -= ready_bytes(&e);
            }
        }
    }
}

fn ready_bytes(e: &Entry) -> usize {
    match &*e.state.borrow() {
        State::Ready(o) => o.body.len(),
        _ => 0,
    }
}

/// The initiator's store of announced and received objects, bounded in entries
/// ([`MAX_CACHE_ENTRIES`]) and bytes ([`MAX_CACHE_BYTES`]); an entry lives at most
/// [`CACHE_TTL`] and then gives its bytes back. Objects already served stay for repeated
/// requests, but make room for new ones when the bytes run short.
///
/// An object that was announced is never requested through the crowd within that time:
/// if it does not arrive, the browser gets an error from the initiator itself. Sending
/// it into the crowd would be exactly the request timing the bundle exists to hide, and
/// any collaborator on the path could force it by cutting the bundle.
#[derive(Default)]
pub struct ObjectCache {
    held: Mutex<Held>,
}

impl ObjectCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an announced object; `None` when the cache holds too many entries (the
    /// object is then not taken from this bundle).
    fn announce(&self, url: &str) -> Option<Arc<Entry>> {
        let mut held = self.lock();
        let now = Instant::now();
        held.expire(now);
        if let Some(e) = held.entries.get(url) {
            // A failed object announced again (by another page) gets a new chance.
            if !matches!(*e.state.borrow(), State::Failed) {
                return Some(e.clone());
            }
        }
        if held.entries.len() >= MAX_CACHE_ENTRIES {
            return None;
        }
        let entry = Arc::new(Entry {
            state: watch::channel(State::Pending).0,
            since: now,
            served: Default::default(),
        });
        held.entries.insert(url.to_string(), entry.clone());
        Some(entry)
    }

    /// Stores a received object if it fits; otherwise marks it failed.
    fn fill(&self, entry: &Entry, object: Object) {
        let mut held = self.lock();
        held.expire(Instant::now());
        let size = object.body.len();
        let pending = matches!(*entry.state.borrow(), State::Pending);
        if pending && held.bytes + size > MAX_CACHE_BYTES {
            held.evict_served(size);
        }
        if pending && held.bytes + size <= MAX_CACHE_BYTES {
            held.bytes += size;
            entry.state.send_replace(State::Ready(Arc::new(object)));
        } else if pending {
            entry.state.send_replace(State::Failed);
        }
    }

    /// Number of objects announced or held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of received objects held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The browser asks for `url`: if an exit announced it (within [`CACHE_TTL`]), the
    /// answer comes from here: the object, waited for at most [`ANNOUNCED_WAIT`], or an
    /// error. `None` means: not announced, send the request into the crowd as usual.
    pub async fn take(&self, url: &str) -> Option<Local> {
        let entry = {
            let mut held = self.lock();
            held.expire(Instant::now());
            held.entries.get(url).cloned()?
        };
        let mut rx = entry.state.subscribe();
        let waited = tokio::time::timeout(
            ANNOUNCED_WAIT,
            rx.wait_for(|s| !matches!(s, State::Pending)),
        )
        .await
        .map(|r| r.map(|s| s.clone()));
        // The entry stays until it expires: a repeated request is answered the same way.
        Some(match waited {
            Ok(Ok(State::Ready(obj))) => {
                entry
                    .served
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Local::Object(obj.response())
            }
            Err(_) => Local::TimedOut,
            Ok(_) => Local::Undelivered,
        })
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

/// Marks a pending object failed; a received one stays.
fn fail_pending(s: &mut State) -> bool {
    if matches!(s, State::Pending) {
        *s = State::Failed;
        true
    } else {
        false
    }
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
    // This bundle's announcements: only these may be filled or failed by it.
    let mut announced: HashMap<String, Arc<Entry>> = HashMap::new();
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
                        // An exit announces at most what its scanner finds; more is
                        // not taken (the cache must not grow at an exit's will).
                        if announced.len() < MAX_OBJECTS {
                            if let Some(u) = normalize(&url) {
                                if let Some(e) = cache.announce(&u) {
                                    announced.insert(u, e);
                                }
                            }
                        }
                    }
                    Frame::ObjectHead {
                        url,
                        status,
                        headers,
                    } => {
                        let Some(entry) = normalize(&url).and_then(|u| announced.get(&u).cloned())
                        else {
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
                                c.entry.state.send_if_modified(fail_pending);
                                current = None;
                            } else {
                                c.body.extend_from_slice(&d);
                            }
                        }
                    }
                    Frame::ObjectEnd => {
                        if let Some(c) = current.take() {
                            cache.fill(
                                &c.entry,
                                Object {
                                    status: c.status,
                                    headers: c.headers,
                                    body: Bytes::from(c.body),
                                },
                            );
                        }
                    }
                    Frame::ObjectFailed(url) => {
                        current = None;
                        if let Some(e) = normalize(&url).and_then(|u| announced.get(&u)) {
                            e.state.send_if_modified(fail_pending);
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
    // Whatever did not arrive will not: waiting requests get an error, never the crowd.
    for entry in announced.values() {
        entry.state.send_if_modified(fail_pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &'static [u8]) -> Object {
        Object {
            status: StatusCode::OK,
            headers: vec![],
            body: Bytes::from_static(body),
        }
    }

    #[tokio::test]
    async fn announced_objects_are_answered_here_delivered_or_not() {
        let cache = Arc::new(ObjectCache::new());
        let entry = cache.announce("http://a.example/x.png").expect("room");
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.take("http://a.example/x.png").await })
        };
        cache.fill(&entry, object(b"png"));
        let Some(Local::Object(resp)) = waiter.await.expect("join") else {
            panic!("not served locally");
        };
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"png");
        assert!(
            matches!(
                cache.take("http://a.example/x.png").await,
                Some(Local::Object(_))
            ),
            "a repeated request is answered here too"
        );
        let failed = cache.announce("http://a.example/y.css").expect("room");
        failed.state.send_if_modified(fail_pending);
        assert!(matches!(
            cache.take("http://a.example/y.css").await,
            Some(Local::Undelivered)
        ));
        assert!(cache
            .take("http://a.example/never-announced")
            .await
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_that_never_comes_times_out_here() {
        let cache = ObjectCache::new();
        let _entry = cache.announce("http://a.example/slow.js").expect("room");
        let started = Instant::now();
        assert!(matches!(
            cache.take("http://a.example/slow.js").await,
            Some(Local::TimedOut)
        ));
        assert!(started.elapsed() >= ANNOUNCED_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_objects_give_their_bytes_back() {
        let cache = ObjectCache::new();
        // Far more than the cache holds, in objects nobody asks for.
        let big: &'static [u8] = Box::leak(vec![0u8; MAX_CACHE_BYTES / 8].into_boxed_slice());
        for round in 0..40 {
            let url = format!("http://a.example/{round}.bin");
            let entry = cache.announce(&url).expect("room");
            cache.fill(&entry, object(big));
            assert!(
                matches!(*entry.state.borrow(), State::Ready(_)),
                "round {round}: the cache is stuck full"
            );
            assert!(cache.bytes() <= MAX_CACHE_BYTES);
            tokio::time::advance(CACHE_TTL / 4).await;
        }
        tokio::time::advance(CACHE_TTL).await;
        let _ = cache.announce("http://a.example/last");
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn served_objects_make_room_for_new_ones() {
        let cache = ObjectCache::new();
        let big: &'static [u8] = Box::leak(vec![0u8; MAX_CACHE_BYTES / 2].into_boxed_slice());
        let first = cache.announce("http://a.example/1").expect("room");
        cache.fill(&first, object(big));
        assert!(matches!(
            cache.take("http://a.example/1").await,
            Some(Local::Object(_))
        ));
        let unserved = cache.announce("http://a.example/2").expect("room");
        cache.fill(&unserved, object(big));
        let third = cache.announce("http://a.example/3").expect("room");
        cache.fill(&third, object(big));
        assert!(
            matches!(*third.state.borrow(), State::Ready(_)),
            "the served object made room"
        );
        assert!(
            matches!(*unserved.state.borrow(), State::Ready(_)),
            "an object not yet served stays"
        );
        assert!(cache.take("http://a.example/1").await.is_none());
        assert_eq!(cache.bytes(), MAX_CACHE_BYTES);
    }

    #[tokio::test]
    async fn endless_announcements_do_not_grow_the_cache() {
        let cache = ObjectCache::new();
        let admitted = (0..MAX_CACHE_ENTRIES * 3)
            .filter(|i| cache.announce(&format!("http://a.example/{i}")).is_some())
            .count();
        assert_eq!(admitted, MAX_CACHE_ENTRIES);
        assert_eq!(cache.len(), MAX_CACHE_ENTRIES);
    }
}
