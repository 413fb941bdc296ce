//! Byte tunnels for `CONNECT`: a tunnel is a request whose body carries the client's bytes
//! and whose response body carries the server's.
//!
//! Owns the pieces every tunnel end is built from: the channel body a tunnel's bytes are
//! fed into ([`channel`]), the early-bytes buffer that lets an initiator send the client's
//! first bytes with the tunnel request and send them again on a retry ([`Uplink`]), the
//! two pumps (bytes into a body, a body into bytes) and the loop that runs both until
//! each side has ended, either fails, or nothing moved for the idle timeout. Bounded
//! buffers everywhere: a slow reader slows the sender, and HTTP/2 flow control carries
//! the pressure along the path. It never looks at the bytes; with TLS inside, jondos on
//! the path see only ciphertext. (The initiator's look at the client's opening bytes is
//! [`crate::node`]'s, with [`crowds_proto::sniff`].)
//!
//! A tunnel that ends abnormally ends its bodies with an error, never with a clean end,
//! so a cut tunnel reaches the other side as a reset stream, not as a short transfer.

use bytes::{Bytes, BytesMut};
use crowds_net::body::{Body, BoxError};
use http_body::Frame;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Largest chunk read from a socket at once.
pub const TUNNEL_BUFFER: usize = 64 * 1024;
/// Chunks queued in a tunnel's channel before the writer waits.
const CHANNEL_CHUNKS: usize = 4;
/// Most of the client's bytes an initiator keeps until the exit answers, to send them
/// again if the path breaks first. A TLS ClientHello is 0.5-2 KiB; a client that sends
/// more before the server answered gives up the retry, not the tunnel.
pub const EARLY_BYTES: usize = 64 * 1024;

/// Anything a tunnel can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a tunnel's channel carries.
enum Msg {
    Data(Bytes),
    /// The sender's side ended cleanly (half-close).
    End,
}

/// The sending side of a tunnel body. Dropped without [`Feed::finish`], the body ends
/// with an error.
pub struct Feed(mpsc::Sender<Msg>);

impl Feed {
    /// Queues bytes; fails once the body's reader is gone.
    pub async fn send(&self, data: Bytes) -> Result<(), BoxError> {
        self.0
            .send(Msg::Data(data))
            .await
            .map_err(|_| "the tunnel's other side is gone".into())
    }

    /// Ends the body cleanly.
    pub async fn finish(self) -> Result<(), BoxError> {
        self.0
            .send(Msg::End)
            .await
            .map_err(|_| "the tunnel's other side is gone".into())
    }
}

/// A body fed through a [`Feed`].
pub fn channel() -> (Feed, Body) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (Feed(tx), ChannelBody { rx, done: false }.boxed_unsync())
}

struct ChannelBody {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err("the tunnel was cut".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The client's side of a tunnel at its initiator: the request body of the current
/// attempt, and until the exit answers, a copy of every byte sent, so that a retry
/// after a broken path sends the same bytes again on a new path.
pub struct Uplink {
    state: Mutex<UplinkState>,
    /// Wakes a send waiting on an attempt that was given up.
    restarted: Notify,
}

struct UplinkState {
    tx: Option<mpsc::Sender<Msg>>,
    early: Early,
    finished: bool,
}

enum Early {
    /// Every byte sent so far (the exit has not answered).
    Keeping(Vec<u8>),
    /// More than [`EARLY_BYTES`] before the answer: no retry is possible.
    Lost,
    /// The exit answered: nothing more is kept.
    Committed,
}

impl Uplink {
    /// An uplink and the body of its first attempt.
    pub fn new() -> (Arc<Self>, Body) {
        let (Feed(tx), body) = channel();
        let uplink = Self {
            state: Mutex::new(UplinkState {
                tx: Some(tx),
                early: Early::Keeping(Vec::new()),
                finished: false,
            }),
            restarted: Notify::new(),
        };
        (Arc::new(uplink), body)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, UplinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the client's bytes on the current attempt (keeping a copy until the exit
    /// answers). Bytes sent to an attempt that is then given up are not lost: the
    /// retry sends its copy.
    pub async fn send(&self, data: Bytes) -> Result<(), BoxError> {
        self.deliver(Msg::Data(data)).await
    }

    /// The client ended its side cleanly.
    pub async fn finish(&self) -> Result<(), BoxError> {
        self.deliver(Msg::End).await
    }

    async fn deliver(&self, msg: Msg) -> Result<(), BoxError> {
        let tx = {
            let mut s = self.state();
            match &msg {
                Msg::Data(data) => {
                    if let Early::Keeping(kept) = &mut s.early {
                        if kept.len() + data.len() <= EARLY_BYTES {
                            kept.extend_from_slice(data);
                        } else {
                            s.early = Early::Lost;
                        }
                    }
                }
                Msg::End => s.finished = true,
            }
            s.tx.clone().ok_or("the tunnel is closed")?
        };
        // Registered before the send, so a restart during the send is seen.
        let restarted = self.restarted.notified();
        tokio::select! {
            sent = tx.send(msg) => match sent {
                Ok(()) => Ok(()),
                // The attempt is gone; a retry sends the kept copy, or the tunnel fails
                // through its answer.
                Err(_) => Ok(()),
            },
            () = restarted => Ok(()),
        }
    }

    /// The exit answered: stop keeping bytes.
    pub fn commit(&self) {
        self.state().early = Early::Committed;
    }

    /// Whether a retry could send every byte sent so far.
    pub fn can_retry(&self) -> bool {
        matches!(self.state().early, Early::Keeping(_))
    }

    /// Gives up the current attempt and returns the body of a new one, holding every
    /// byte sent so far (and the end, if the client ended); `None` if they were not all
    /// kept.
    pub fn restart(&self) -> Option<Body> {
        let body = {
            let mut s = self.state();
            let Early::Keeping(kept) = &s.early else {
                return None;
            };
            let (Feed(tx), body) = channel();
            // A fresh channel has room for one chunk and the end.
            if !kept.is_empty()
                && tx
                    .try_send(Msg::Data(Bytes::copy_from_slice(kept)))
                    .is_err()
            {
                return None;
            }
            if s.finished && tx.try_send(Msg::End).is_err() {
                return None;
            }
            // Replacing the sender drops the given-up attempt's.
            s.tx = Some(tx);
            body
        };
        self.restarted.notify_waiters();
        Some(body)
    }

    /// Closes the current attempt with an error (the tunnel is torn down).
    pub fn close(&self) {
        self.state().tx = None;
        self.restarted.notify_waiters();
    }
}

/// The time of the last byte moved either way through a tunnel.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// Starts counting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    /// A byte moved.
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes a body's bytes to `w` until the body ends (then shuts `w`'s sending side
/// down) or fails.
pub async fn body_to_writer<W: AsyncWrite + Unpin>(
    mut body: Body,
    mut w: W,
    activity: &Activity,
) -> Result<(), BoxError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            activity.touch();
            w.write_all(&data).await?;
            w.flush().await?;
        }
    }
    w.shutdown().await?;
    Ok(())
}

/// Reads `r` until its end, handing each chunk to `send`.
pub async fn read_chunks<R, F, Fut>(
    mut r: R,
    activity: &Activity,
    mut send: F,
) -> Result<(), BoxError>
where
    R: AsyncRead + Unpin,
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(TUNNEL_BUFFER);
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        activity.touch();
        send(buf.split().freeze()).await?;
    }
}

/// Reads `r` into a [`Feed`] until its end, which ends the body cleanly.
pub async fn reader_to_feed<R: AsyncRead + Unpin>(
    r: R,
    feed: Feed,
    activity: &Activity,
) -> Result<(), BoxError> {
    read_chunks(r, activity, |chunk| feed.send(chunk)).await?;
    feed.finish().await
}

/// Runs a tunnel's two directions until both have ended, either fails, or nothing moved
/// either way for `idle`.
pub async fn run<U, D>(up: U, down: D, activity: &Activity, idle: Duration)
where
    U: Future<Output = Result<(), BoxError>>,
    D: Future<Output = Result<(), BoxError>>,
{
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let check = (idle / 4).max(Duration::from_millis(10));
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if let Err(e) = r {
                    tracing::debug!("tunnel ended: {e}");
                    return;
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if let Err(e) = r {
                    tracing::debug!("tunnel ended: {e}");
                    return;
                }
            }
            () = tokio::time::sleep(check) => {
                if activity.quiet() >= idle {
                    tracing::debug!("tunnel idle for {idle:?}: closed");
                    return;
                }
            }
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Rewound<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewound<S> {
    /// `inner`, with `prefix` put back in front of it.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The exit's end of a tunnel: the request body goes to the server, the server's bytes
/// become the response body. Runs until both sides end, either fails, or `idle` passes
/// without a byte; `guard` is held meanwhile.
pub fn to_server<G: Send + 'static>(
    request_body: Body,
    server: tokio::net::TcpStream,
    idle: Duration,
    guard: G,
) -> Body {
    let (feed, body) = channel();
    tokio::spawn(async move {
        let (r, w) = server.into_split();
        let activity = Activity::new();
        run(
            body_to_writer(request_body, w, &activity),
            reader_to_feed(r, feed, &activity),
            &activity,
            idle,
        )
        .await;
        drop(guard);
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_body_ends_cleanly_only_when_finished() {
        let (feed, body) = channel();
        let reader = tokio::spawn(collect(body));
        feed.send(Bytes::from_static(b"abc")).await.expect("send");
        feed.finish().await.expect("finish");
        assert_eq!(reader.await.expect("task").expect("clean end"), b"abc");

        let (feed, body) = channel();
        let reader = tokio::spawn(collect(body));
        feed.send(Bytes::from_static(b"abc")).await.expect("send");
        drop(feed);
        assert!(
            reader.await.expect("task").is_err(),
            "a feed dropped unfinished is an error, never a short body"
        );
    }

    #[tokio::test]
    async fn a_restart_sends_every_early_byte_again_and_nothing_twice() {
        let (uplink, first) = Uplink::new();
        uplink
            .send(Bytes::from_static(b"hello "))
            .await
            .expect("send");
        // The first attempt is given up (its path broke) with its bytes unread.
        drop(first);
        uplink
            .send(Bytes::from_static(b"world"))
            .await
            .expect("send to a gone attempt");
        let second = uplink.restart().expect("every byte kept");
        uplink.commit();
        uplink.send(Bytes::from_static(b"!")).await.expect("send");
        uplink.finish().await.expect("finish");
        assert_eq!(collect(second).await.expect("clean"), b"hello world!");
        assert!(!uplink.can_retry(), "committed: nothing kept any more");
        assert!(uplink.restart().is_none());
    }

    #[tokio::test]
    async fn a_restart_keeps_the_clients_end() {
        let (uplink, first) = Uplink::new();
        uplink.send(Bytes::from_static(b"x")).await.expect("send");
        uplink.finish().await.expect("finish");
        drop(first);
        let second = uplink.restart().expect("kept");
        assert_eq!(collect(second).await.expect("clean end"), b"x");
    }

    #[tokio::test]
    async fn too_many_early_bytes_give_up_the_retry_not_the_tunnel() {
        let (uplink, body) = Uplink::new();
        let reader = tokio::spawn(collect(body));
        let chunk = Bytes::from(vec![7u8; 16 * 1024]);
        for _ in 0..(EARLY_BYTES / chunk.len() + 1) {
            uplink.send(chunk.clone()).await.expect("send");
        }
        assert!(!uplink.can_retry());
        assert!(uplink.restart().is_none());
        uplink.finish().await.expect("finish");
        let got = reader.await.expect("task").expect("clean");
        assert_eq!(got.len(), (EARLY_BYTES / chunk.len() + 1) * chunk.len());
    }

    #[tokio::test]
    async fn a_send_blocked_on_a_stuck_attempt_returns_on_restart() {
        let (uplink, first) = Uplink::new();
        // Nobody reads the first attempt: fill its channel.
        for _ in 0..CHANNEL_CHUNKS {
            uplink.send(Bytes::from_static(b"a")).await.expect("send");
        }
        let blocked = {
            let uplink = uplink.clone();
            tokio::spawn(async move { uplink.send(Bytes::from_static(b"b")).await })
        };
        tokio::task::yield_now().await;
        let second = uplink.restart().expect("kept");
        blocked.await.expect("task").expect("returns");
        uplink.finish().await.expect("finish");
        assert_eq!(collect(second).await.expect("clean"), b"aaaab");
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_close_and_busy_ones_do_not() {
        let (mut client, server_side) = tokio::io::duplex(1024);
        let (uplink_feed, uplink_body) = channel();
        let (down_feed, down_body) = channel();
        let activity = Activity::new();
        let (r, w) = tokio::io::split(server_side);
        let task = tokio::spawn(async move {
            let activity = activity;
            run(
                reader_to_feed(r, uplink_feed, &activity),
                body_to_writer(down_body, w, &activity),
                &activity,
                Duration::from_secs(60),
            )
            .await;
        });
        let mut up = uplink_body;
        // Traffic every 30 s keeps it open for 3 minutes.
        for _ in 0..6 {
            client.write_all(b"ping").await.expect("write");
            let frame = up.frame().await.expect("frame").expect("data");
            assert_eq!(
                frame.into_data().expect("data"),
                Bytes::from_static(b"ping")
            );
            down_feed
                .send(Bytes::from_static(b"pong"))
                .await
                .expect("send");
            let mut buf = [0u8; 4];
            client.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"pong");
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert!(!task.is_finished());
        }
        // Then silence: closed after about a minute, not before.
        let quiet_from = Instant::now();
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("idle tunnel closed")
            .expect("task");
        assert!(quiet_from.elapsed() >= Duration::from_secs(30));
        // Its end is an error on the uplink, not a clean end.
        assert!(up.frame().await.expect("a frame").is_err());
        drop(down_feed);
    }
}
