//! The timing defence: page bundles at the exit, and the initiator's object cache.
//!
//! At the exit ([`bundle()`]): an HTML page fetched for a GET that asked for it is parsed
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

use crate::crowd::Crowd;
use crate::exit::{self, ExitConfig};
use bytes::Bytes;
use crowds_net::body::{self, Body, BoxError};
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
/// Objects of one page the exit fetches at once. A browser speaking HTTP/2 asks a server
/// for all of a page's objects at once; an exit fetching them six at a time (HTTP/1.1's
/// habit) paid two round trips to the server per six objects, which on real links cost
/// more than the whole path (issue 18). 48 covers most pages in one round.
pub const OBJECT_FETCHES: usize = 48;
/// Most bytes of fetched objects an exit holds at once, over all the bundles it is
/// making: a member that asks for big pages and never reads the answers can pin no more.
pub const MAX_EXIT_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// The exit's budget for held object bytes, in KiB ([`MAX_EXIT_BUNDLE_BYTES`]).
fn exit_budget() -> Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BUDGET
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_EXIT_BUNDLE_BYTES / 1024)))
        .clone()
}
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

/// Whether the answer to a navigation is a page that must come as a bundle: any answer
/// with a body (error pages render too) whose type names HTML or XHTML, or that has no
/// type at all (browsers sniff it). The exit bundles every such answer (decoding it
/// first if the server compressed it anyway), so the initiator can tell a page a
/// collaborator unbundled on the way (or re-labelled 200 as 404) from one that was never
/// meant to be a bundle.
pub fn must_bundle(resp: &Response<Body>) -> bool {
    let status = resp.status();
    let has_body = !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED;
    has_body
        && (crate::active::is_page(resp.headers())
            || !resp.headers().contains_key(header::CONTENT_TYPE))
}

/// Submits a relayed request at the exit ([`exit::submit`]) and returns the server's
/// response. A GET carrying the prefetch header whose answer is an HTML page comes back
/// as a page bundle: the page, then its embedded objects, fetched here.
pub async fn submit<G: Send + 'static>(
    req: Request<Body>,
    config: &ExitConfig,
    crowd: &Arc<Crowd>,
    guard: G,
) -> Response<Body> {
    let prefetch = wants_bundle(&req);
    let page_url = req.uri().clone();
    match exit::submit(req, config, crowd, guard).await {
        Ok(resp) if prefetch => bundle(&page_url, resp, config.clone(), crowd.clone()),
        Ok(resp) => resp,
        Err(kind) => body::crowd_error(kind),
    }
}

/// Turns the server's answer to a navigation GET into a page bundle, if it is a page
/// ([`must_bundle`]); anything else is returned unchanged. A page in a compression the
/// exit cannot undo is answered with an error instead (the initiator would refuse it).
pub fn bundle(
    page_url: &Uri,
    resp: Response<Body>,
    config: ExitConfig,
    crowd: Arc<Crowd>,
) -> Response<Body> {
    let Some(scanner) = Scanner::new(&page_url.to_string()) else {
        return resp;
    };
    if !must_bundle(&resp) {
        return resp;
    }
    let Some(resp) = crate::active::decode_inspecting(resp, |_: Option<&[u8]>| {}) else {
        return body::crowd_error(crowds_proto::relay::ErrorKind::OriginUnreachable);
    };
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
    /// The body's share of the exit's budget, given back when the object is sent.
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
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
        let frames = match &fetched {
            Some(obj) => {
                let mut frames = Vec::new();
                if obj.stylesheet {
                    let css = String::from_utf8_lossy(&obj.body);
                    for found in crowds_proto::html::stylesheet_urls(&css, &url) {
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
                    headers: obj.headers.clone(),
                });
                frames
            }
            None => vec![Frame::ObjectFailed(url)],
        };
        for f in frames {
            let Some(encoded) = control(&f) else { return };
            if tx.send(encoded).await.is_err() {
                return;
            }
        }
        if let Some(obj) = fetched {
            for chunk in obj.body.chunks(bundle::MAX_FRAME_PAYLOAD) {
                if tx.send(data(false, chunk)).await.is_err() {
                    return;
                }
            }
            let Some(end) = control(&Frame::ObjectEnd) else {
                return;
            };
            if tx.send(end).await.is_err() {
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
    let resp = exit::submit(req, config, crowd, ()).await.ok()?;
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
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = obj.frame().await {
        let Ok(bytes) = frame.ok()?.into_data() else {
            continue;
        };
        if body.len() + bytes.len() > MAX_OBJECT_BYTES {
            return None;
        }
        // Take the bytes from the bundle's budget, and from the exit's, before holding
        // them (waiting for the exit's: other bundles give theirs back as they are sent).
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes.len())
            })
            .ok()?;
        let kib = u32::try_from(bytes.len().div_ceil(1024)).ok()?;
        let more = exit_budget().acquire_many_owned(kib).await.ok()?;
        match held.as_mut() {
            Some(h) => h.merge(more),
            None => held = Some(more),
        }
        body.extend_from_slice(&bytes);
    }
    Some(Fetched {
        status: parts.status.as_u16(),
        headers,
        body,
        stylesheet,
        _held: held,
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
    /// Drops entries until there is room for one more: objects already served first,
    /// then the oldest of any kind.
    fn make_room(&mut self) {
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| {
                (
                    !e.served.load(std::sync::atomic::Ordering::Relaxed),
                    e.since,
                )
            })
            .map(|(url, _)| url.clone());
        if let Some(url) = victim {
            if let Some(e) = self.entries.remove(&url) {
                self.bytes -= ready_bytes(&e);
            }
        }
    }

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

    /// Records an announced object. When the cache holds [`MAX_CACHE_ENTRIES`], the
    /// oldest entries make room (served ones first): an announcement is never dropped,
    /// since a dropped one would send the browser's request into the crowd.
    fn announce(&self, url: &str) -> Arc<Entry> {
        let mut held = self.lock();
        let now = Instant::now();
        held.expire(now);
        if let Some(e) = held.entries.get(url) {
            // A failed object announced again (by another page) gets a new chance.
            if !matches!(*e.state.borrow(), State::Failed) {
                return e.clone();
            }
        }
        if held.entries.len() >= MAX_CACHE_ENTRIES {
            held.make_room();
        }
        let entry = Arc::new(Entry {
            state: watch::channel(State::Pending).0,
            since: now,
            served: Default::default(),
        });
        held.entries.insert(url.to_string(), entry.clone());
        entry
    }

    /// An object the initiator found in a page but the exit did not announce: a
    /// collaborator dropped the announcement, or the whole bundle. It is answered with an
    /// error, like an announced object that did not arrive.
    fn fail_unannounced(&self, url: &str) -> Arc<Entry> {
        let entry = self.announce(url);
        entry.state.send_if_modified(fail_pending);
        entry
    }

    /// Stores a received object if it fits and `entry` is still the cache's entry for
    /// `url` (not expired or evicted meanwhile); otherwise marks it failed.
    fn fill(&self, url: &str, entry: &Arc<Entry>, object: Object) {
        let mut held = self.lock();
        held.expire(Instant::now());
        let size = object.body.len();
        let current = held.entries.get(url).is_some_and(|e| Arc::ptr_eq(e, entry));
        let pending = matches!(*entry.state.borrow(), State::Pending);
        if pending && !current {
            entry.state.send_replace(State::Failed);
            return;
        }
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
///
/// The initiator reads the page itself as it passes, with the exit's own scanner: an
/// object in it that the exit did not announce before the bytes naming it (a
/// collaborator dropped the announcement) is answered with an error, never from the crowd.
pub fn unbundle(resp: Response<Body>, cache: Arc<ObjectCache>, page_url: &Uri) -> Response<Body> {
    if !resp.headers().contains_key(BUNDLE_HEADER) {
        return resp;
    }
    let scanner = Scanner::new(&page_url.to_string());
    let (mut parts, crowd_body) = resp.into_parts();
    parts.headers.remove(BUNDLE_HEADER);
    if let Some(len) = parts.headers.remove(PAGE_LENGTH_HEADER) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    let (tx, rx) = mpsc::channel::<FrameResult>(CHANNEL_FRAMES);
    tokio::spawn(consume(crowd_body, tx, cache, scanner));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

/// The initiator's side of a response to a request it sent into the crowd: a bundle is
/// unpacked ([`unbundle`]). A page that came back without one although the request was
/// a marked navigation (`marked`) was unbundled on the way (every exit bundles pages):
/// it is passed on, decoded if need be, while the initiator reads it and answers every
/// object it names with an error, so none of them is requested through the crowd.
pub fn receive(
    resp: Response<Body>,
    cache: Arc<ObjectCache>,
    page_url: &Uri,
    marked: bool,
) -> Response<Body> {
    if resp.headers().contains_key(BUNDLE_HEADER) {
        return unbundle(resp, cache, page_url);
    }
    if !marked || !must_bundle(&resp) {
        return resp;
    }
    let Some(mut scanner) = Scanner::new(&page_url.to_string()) else {
        return resp;
    };
    tracing::debug!("a page came back without its bundle: its objects are refused");
    let guarded = crate::active::decode_inspecting(resp, move |bytes: Option<&[u8]>| {
        let found = match bytes {
            Some(b) => scanner.feed(b),
            None => scanner.finish(),
        };
        for url in found {
            cache.fail_unannounced(&url);
        }
    });
    guarded.unwrap_or_else(|| body::crowd_error(crowds_proto::relay::ErrorKind::OriginUnreachable))
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
    url: String,
    entry: Arc<Entry>,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

async fn consume(
    mut crowd_body: Body,
    tx: mpsc::Sender<FrameResult>,
    cache: Arc<ObjectCache>,
    mut scanner: Option<Scanner>,
) {
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
                        if let Some(sc) = scanner.as_mut() {
                            for url in sc.feed(&d) {
                                if !announced.contains_key(&url) {
                                    cache.fail_unannounced(&url);
                                }
                            }
                        }
                        if let Some(tx) = &page {
                            if tx.send(Ok(BodyFrame::data(Bytes::from(d)))).await.is_err() {
                                page = None;
                            }
                        }
                    }
                    Frame::PageEnd => {
                        if let Some(mut sc) = scanner.take() {
                            for url in sc.finish() {
                                if !announced.contains_key(&url) {
                                    cache.fail_unannounced(&url);
                                }
                            }
                        }
                        page = None;
                    }
                    Frame::Announce(url) => {
                        // An exit announces at most what its scanner finds; more is
                        // not taken (the cache must not grow at an exit's will).
                        if announced.len() < MAX_OBJECTS {
                            if let Some(u) = normalize(&url) {
                                let e = cache.announce(&u);
                                announced.insert(u, e);
                            }
                        }
                    }
                    Frame::ObjectHead {
                        url,
                        status,
                        headers,
                    } => {
                        let Some((url, entry)) = normalize(&url)
                            .and_then(|u| announced.get(&u).cloned().map(|e| (u, e)))
                        else {
                            current = None;
                            continue;
                        };
                        current = Some(Current {
                            url,
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
                                &c.url,
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
        let entry = cache.announce("http://a.example/x.png");
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.take("http://a.example/x.png").await })
        };
        cache.fill("http://a.example/x.png", &entry, object(b"png"));
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
        let failed = cache.announce("http://a.example/y.css");
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
        let _entry = cache.announce("http://a.example/slow.js");
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
            let entry = cache.announce(&url);
            cache.fill(&url, &entry, object(big));
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
        let first = cache.announce("http://a.example/1");
        cache.fill("http://a.example/1", &first, object(big));
        assert!(matches!(
            cache.take("http://a.example/1").await,
            Some(Local::Object(_))
        ));
        let unserved = cache.announce("http://a.example/2");
        cache.fill("http://a.example/2", &unserved, object(big));
        let third = cache.announce("http://a.example/3");
        cache.fill("http://a.example/3", &third, object(big));
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
    async fn endless_announcements_do_not_grow_the_cache_nor_fail_open() {
        let cache = ObjectCache::new();
        for i in 0..MAX_CACHE_ENTRIES * 3 {
            let _ = cache.announce(&format!("http://a.example/{i}"));
        }
        assert_eq!(cache.len(), MAX_CACHE_ENTRIES);
        // The newest announcements are all there: none was dropped.
        let last = format!("http://a.example/{}", MAX_CACHE_ENTRIES * 3 - 1);
        assert!(cache.lock().entries.contains_key(&last));
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_arriving_after_its_entry_expired_is_not_counted() {
        let cache = ObjectCache::new();
        let entry = cache.announce("http://a.example/late");
        tokio::time::advance(CACHE_TTL * 2).await;
        let _ = cache.announce("http://a.example/other");
        cache.fill("http://a.example/late", &entry, object(b"late bytes"));
        assert_eq!(cache.bytes(), 0, "bytes of an entry no longer held");
        assert!(matches!(*entry.state.borrow(), State::Failed));
    }

    #[tokio::test]
    async fn objects_the_exit_did_not_announce_are_answered_with_an_error() {
        let cache = ObjectCache::new();
        let _ = cache.fail_unannounced("http://a.example/dropped.png");
        assert!(matches!(
            cache.take("http://a.example/dropped.png").await,
            Some(Local::Undelivered)
        ));
    }

    fn page_uri() -> Uri {
        "http://site.example/page".parse().expect("uri")
    }

    #[tokio::test]
    async fn a_page_stripped_of_its_bundle_gets_its_objects_refused() {
        let cache = Arc::new(ObjectCache::new());
        let mut resp = Response::new(body::full("<html><img src=/a.png><img src=b.png></html>"));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let page = receive(resp, cache.clone(), &page_uri(), true);
        let bytes = page.into_body().collect().await.expect("page").to_bytes();
        assert!(
            String::from_utf8_lossy(&bytes).contains("a.png"),
            "the page is delivered"
        );
        for url in ["http://site.example/a.png", "http://site.example/b.png"] {
            assert!(
                matches!(cache.take(url).await, Some(Local::Undelivered)),
                "{url} would have gone into the crowd"
            );
        }
        // A request that was not a marked navigation is left alone.
        let other = Arc::new(ObjectCache::new());
        let mut resp = Response::new(body::full("<img src=/c.png>"));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let _ = receive(resp, other.clone(), &page_uri(), false)
            .into_body()
            .collect()
            .await;
        assert!(other.is_empty());
    }

    #[tokio::test]
    async fn an_announcement_dropped_on_the_path_still_fails_closed() {
        let cache = Arc::new(ObjectCache::new());
        // The exit announced a.png only; b.png's announcement was dropped on the way.
        let mut wire = Vec::new();
        wire.extend(
            Frame::Announce("http://site.example/a.png".into())
                .encode()
                .expect("frame"),
        );
        wire.extend(bundle::encode_data(
            true,
            b"<html><img src=/a.png><img src=/b.png></html>",
        ));
        wire.extend(Frame::PageEnd.encode().expect("frame"));
        let mut resp = Response::new(body::full(wire));
        resp.headers_mut()
            .insert(BUNDLE_HEADER, HeaderValue::from_static("1"));
        let page = receive(resp, cache.clone(), &page_uri(), true);
        let _ = page.into_body().collect().await;
        assert!(matches!(
            cache.take("http://site.example/b.png").await,
            Some(Local::Undelivered)
        ));
        // a.png was announced and never came: refused as well (the bundle ended).
        assert!(matches!(
            cache.take("http://site.example/a.png").await,
            Some(Local::Undelivered)
        ));
    }
}
