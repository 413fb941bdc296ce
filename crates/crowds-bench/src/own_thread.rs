//! Hops on threads of their own: each relay or jondo on a tokio runtime in a thread of
//! its own, as a hop on a separate host (or a separate process) runs.
//!
//! By default (not with `--shared-runtime`), every hop of a relay chain and every jondo
//! of the crowd is started here instead of on the harness's shared runtime: relays on a
//! current-thread runtime, jondos on the runtime `crowds jondo` uses. On the shared runtime, one
//! worker thread can carry a request through several hops without the kernel waking
//! another thread; on separate hosts every hop is a wake-up of its own. Owns nothing but
//! the threads; what runs on them is the caller's.

use anyhow::{anyhow, Context, Result};
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Runs `start` on `runtime` in a new thread, returns what it returned, and keeps the
/// runtime (and every task `start` spawned) running until `shutdown` is cancelled.
pub async fn start<T, F, Fut>(
    name: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    start: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let runtime = runtime.with_context(|| format!("runtime for {name}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let started = start().await;
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    shutdown.cancelled().await;
                }
            });
        })
        .with_context(|| format!("spawn thread {name}"))?;
    rx.await
        .map_err(|_| anyhow!("thread {name} ended before it started"))?
}

/// A current-thread runtime: what a one-task relay runs best on, and what
/// `crowds jondo` runs on by default ([`crowds_jondo::jondo::runtime`] with one thread).
pub fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
