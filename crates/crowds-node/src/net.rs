//! Small networking helpers: accept loops with a connection cap, clocks, TLS dialling.
//!
//! Owns the one accept loop every listener uses (a semaphore caps concurrent
//! connections; shutdown stops accepting) and the wall clock read in unix
//! milliseconds, so protocol code can be handed time rather than read it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
    let permits = Arc::new(Semaphore::new(limit));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
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
