//! Small networking helpers: accept loops with a connection cap, clocks, TLS dialling.
//!
//! Owns the one accept loop every listener uses (a semaphore caps concurrent
//! connections; shutdown stops accepting) and the wall clock read in unix
//! milliseconds, so protocol code can be handed time rather than read it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

/// Time allowed for a TCP connect plus TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The wall clock in unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds a TCP listener with a clear error naming the address and its purpose.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, crate::NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| crate::NodeError::io(format!("cannot listen for {what} on {addr}"), e))
}

/// When an accept loop last had all its connection slots taken, so that new clients
/// waited in the kernel's backlog (or gave up): the blender reads it so that members'
/// heartbeats it could not take in are not held against them.
#[derive(Debug, Default)]
pub struct Saturation {
    /// Unix ms of the end of the last saturation; `u64::MAX` while saturated now; 0 never.
    at: AtomicU64,
}

impl Saturation {
    /// The last time (unix ms) the loop was saturated: `now` if it is saturated right
    /// now, `None` if it never was.
    pub fn last_at(&self, now: u64) -> Option<u64> {
        match self.at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at.min(now)),
        }
    }

    fn begin(&self) {
        self.at.store(u64::MAX, Ordering::Relaxed);
    }

    fn end(&self) {
        self.at.store(now_ms().max(1), Ordering::Relaxed);
    }
}

/// Accepts connections until `shutdown`, running `handle` for each, at most `limit` at
/// once (further clients wait in the kernel's backlog).
pub fn spawn_accept_loop<F, Fut>(
    listener: TcpListener,
    limit: usize,
    shutdown: CancellationToken,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_watched_accept_loop(listener, limit, None, shutdown, handle)
}

/// [`spawn_accept_loop`], recording in `saturation` (if given) when every one of the
/// `limit` slots is taken and the loop has to wait for one.
pub fn spawn_watched_accept_loop<F, Fut>(
    listener: TcpListener,
    limit: usize,
    saturation: Option<Arc<Saturation>>,
    shutdown: CancellationToken,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    tokio::spawn(async move {
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => return,
                Err(TryAcquireError::NoPermits) => {
                    if let Some(s) = &saturation {
                        s.begin();
                    }
                    let p = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    };
                    if let Some(s) = &saturation {
                        s.end();
                    }
                    p
                }
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Connections outlive `shutdown` so in-flight requests can finish; the
                    // daemon decides how long to wait for them.
                    let fut = handle(stream, peer);
                    tokio::spawn(async move {
                        fut.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With its one slot taken, the loop reports itself saturated (now) while a second
    /// client waits, and the time it ended once that client got in.
    #[tokio::test]
    async fn a_full_accept_loop_reports_saturation() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let saturation = Arc::new(Saturation::default());
        let (release, released) = tokio::sync::watch::channel(false);
        let shutdown = CancellationToken::new();
        let _loop = spawn_watched_accept_loop(
            listener,
            1,
            Some(saturation.clone()),
            shutdown.clone(),
            move |_stream, _| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                }
            },
        );
        assert_eq!(saturation.last_at(now_ms()), None, "never saturated yet");
        let _first = TcpStream::connect(addr).await.expect("first");
        let _second = TcpStream::connect(addr).await.expect("second (backlog)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while saturation.last_at(u64::MAX - 1) != Some(u64::MAX - 1) {
            assert!(std::time::Instant::now() < deadline, "never saturated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = now_ms();
        release.send(true).expect("release");
        while saturation.last_at(u64::MAX - 1) == Some(u64::MAX - 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "saturation never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended = saturation.last_at(u64::MAX - 1).expect("ended");
        assert!(ended >= before && ended <= now_ms(), "{ended}");
        shutdown.cancel();
    }
}
