//! Byte tunnels for `CONNECT`: splicing the two ends of each hop together.
//!
//! Owns the copy loop of an HTTPS (or any TCP) tunnel once every hop has answered 200:
//! bytes flow both ways with bounded buffers, so a slow reader slows the sender (HTTP/2
//! flow control carries the pressure along the path), and the tunnel closes when
//! either side closes, fails, or stays idle longer than the idle timeout. It never
//! looks at the bytes: with TLS inside, jondos on the path see only ciphertext.
//!
//! The one exception is the initiator's splice ([`splice_sniffed`]): it reads the client's
//! opening bytes, so plaintext HTTP sent through a tunnel is never passed on raw.
//!
//! A tunnel end is either hyper's pending upgrade of a request or response, or an
//! in-memory pipe the exit hands back when the tunnel starts inside this jondo.

use crowds_proto::sniff::{self, Opening};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;

/// Copy buffer per direction.
pub const TUNNEL_BUFFER: usize = 64 * 1024;

/// Anything a tunnel can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An in-memory tunnel end carried in response extensions (which must be `Clone`).
#[derive(Clone)]
pub struct PipeEnd(Arc<Mutex<Option<DuplexStream>>>);

impl PipeEnd {
    /// Wraps one end of a pipe.
    pub fn new(stream: DuplexStream) -> Self {
        Self(Arc::new(Mutex::new(Some(stream))))
    }
}

/// One end of a tunnel hop.
pub enum TunnelEnd {
    /// hyper's upgrade of a CONNECT request or its 2xx response.
    Upgrade(OnUpgrade),
    /// An in-memory pipe.
    Pipe(DuplexStream),
}

impl TunnelEnd {
    async fn into_io(self) -> Option<Box<dyn Io>> {
        match self {
            TunnelEnd::Upgrade(up) => Some(Box::new(TokioIo::new(up.await.ok()?))),
            TunnelEnd::Pipe(p) => Some(Box::new(p)),
        }
    }
}

/// Anything with HTTP extensions (requests and responses).
pub trait Extensions {
    /// The extensions map.
    fn extensions_mut(&mut self) -> &mut http::Extensions;
}

impl<B> Extensions for http::Request<B> {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Request::extensions_mut(self)
    }
}

impl<B> Extensions for http::Response<B> {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Response::extensions_mut(self)
    }
}

/// Takes the tunnel end attached to a request or response, if any.
pub fn take_end<T: Extensions>(msg: &mut T) -> Option<TunnelEnd> {
    let ext = msg.extensions_mut();
    if let Some(up) = ext.remove::<OnUpgrade>() {
        return Some(TunnelEnd::Upgrade(up));
    }
    let pipe = ext.remove::<PipeEnd>()?;
    let stream = pipe.0.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some(TunnelEnd::Pipe(stream))
}

/// Once both ends are ready, copies bytes between them until either side ends or the
/// tunnel is idle for `idle`. `guard` is held for the tunnel's lifetime.
pub fn splice<G: Send + 'static>(a: TunnelEnd, b: TunnelEnd, idle: Duration, guard: G) {
    tokio::spawn(async move {
        let (Some(a), Some(b)) = tokio::join!(a.into_io(), b.into_io()) else {
            return;
        };
        copy(a, b, idle).await;
        drop(guard);
    });
}

/// Like [`splice`], with a ready stream on one side.
pub fn splice_io<S, G>(a: TunnelEnd, stream: S, idle: Duration, guard: G)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    tokio::spawn(async move {
        let Some(a) = a.into_io().await else { return };
        copy(a, stream, idle).await;
        drop(guard);
    });
}

/// What the initiator does with a tunnel whose client turned out to speak plain HTTP:
/// serve it as proxied requests (hygiene, timing defence), never pass it through raw.
pub type OnPlainHttp = Box<dyn FnOnce(Rewound<Box<dyn Io>>) + Send>;

/// The initiator's splice: like [`splice`], but the client's opening bytes are read
/// first ([`crowds_proto::sniff`]). A plaintext HTTP/1 request goes to `on_http` and
/// the crowd's end is closed; cleartext HTTP/2, or HTTP after the server already spoke,
/// closes the tunnel; anything else is spliced as usual. The server's bytes flow to the
/// client meanwhile, so protocols where the server speaks first still work.
pub fn splice_sniffed<G: Send + 'static>(
    client: TunnelEnd,
    crowd: TunnelEnd,
    idle: Duration,
    guard: G,
    on_http: OnPlainHttp,
) {
    tokio::spawn(async move {
        let (Some(mut client), Some(mut crowd)) = tokio::join!(client.into_io(), crowd.into_io())
        else {
            return;
        };
        let opened = tokio::time::timeout(idle, sniff(&mut client, &mut crowd)).await;
        let Ok(Ok((opening, prefix))) = opened else {
            return;
        };
        match opening {
            Opening::Http1 => {
                drop(crowd);
                drop(guard);
                on_http(Rewound::new(prefix, client));
            }
            Opening::Http2 => {
                tracing::debug!("cleartext HTTP/2 in a tunnel: closed");
            }
            Opening::Other | Opening::NeedMore => {
                if !prefix.is_empty() && crowd.write_all(&prefix).await.is_err() {
                    return;
                }
                copy(client, crowd, idle).await;
                drop(guard);
            }
        }
    });
}

/// Reads the client's opening bytes until they are classified, passing the server's
/// bytes on meanwhile. [`Opening::Http2`] stands for "close": cleartext HTTP/2, HTTP once
/// the server has spoken, or the crowd's side ending first. The client ending first is
/// [`Opening::Other`] (nothing of it is left to read).
async fn sniff(
    client: &mut Box<dyn Io>,
    crowd: &mut Box<dyn Io>,
) -> std::io::Result<(Opening, Vec<u8>)> {
    let mut prefix = Vec::new();
    let mut server_spoke = false;
    let mut from_client = [0u8; sniff::SNIFF_BYTES];
    let mut from_server = vec![0u8; TUNNEL_BUFFER];
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let n = n?;
                if n == 0 {
                    return Ok((Opening::Other, prefix));
                }
                prefix.extend_from_slice(&from_client[..n]);
                match sniff::opening(&prefix) {
                    Opening::NeedMore => {}
                    Opening::Http1 if server_spoke => return Ok((Opening::Http2, prefix)),
                    decided => return Ok((decided, prefix)),
                }
            }
            n = crowd.read(&mut from_server) => {
                let n = n?;
                if n == 0 {
                    // The crowd's side ended before the client's opening was read: close,
                    // rather than pass on whatever the client sends next unread (a
                    // collaborator could half-close to get a plain request through raw).
                    return Ok((Opening::Http2, prefix));
                }
                client.write_all(&from_server[..n]).await?;
                server_spoke = true;
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

/// Copies both ways until either side ends or nothing moves for `idle`.
pub async fn copy<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity {
        inner: a,
        last: last.clone(),
        start,
    };
    let mut b = b;
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, TUNNEL_BUFFER, TUNNEL_BUFFER);
    tokio::pin!(copy);
    let check = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    tracing::debug!("tunnel ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep(check) => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    tracing::debug!("tunnel idle for {idle:?}: closed");
                    return;
                }
            }
        }
    }
}

/// Records the time of the last byte moved through `inner`.
struct Activity<S> {
    inner: S,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<S> Activity<S> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_close_and_busy_ones_do_not() {
        let (a_outer, a_inner) = tokio::io::duplex(1024);
        let (b_inner, mut b_outer) = tokio::io::duplex(1024);
        let task = tokio::spawn(copy(a_inner, b_inner, Duration::from_secs(60)));
        let mut a_outer = a_outer;
        // Traffic every 30 s keeps it open for 3 minutes.
        for _ in 0..6 {
            a_outer.write_all(b"ping").await.expect("write");
            let mut buf = [0u8; 4];
            b_outer.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"ping");
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert!(!task.is_finished());
        }
        // Then silence: closed after about a minute, not before.
        let quiet_from = Instant::now();
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("idle tunnel closed")
            .expect("task");
        assert!(
            quiet_from.elapsed() >= Duration::from_secs(30),
            "{:?}",
            quiet_from.elapsed()
        );
        let mut buf = [0u8; 1];
        assert_eq!(b_outer.read(&mut buf).await.expect("eof"), 0);
    }
}
