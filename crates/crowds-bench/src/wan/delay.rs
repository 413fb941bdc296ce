//! The delaying TCP relay: a wide-area link of one-way delay d, emulated on loopback.
//!
//! This machine has no netem, so the WAN section puts one of these in front of every
//! jondo's peer port and in front of the origin. A relay accepts a connection, connects
//! to its target (from the client's own address, so the target sees the same peer as
//! without the relay), and forwards each direction on its own: every chunk read is held
//! until `arrival + d` and then written, in order. End of stream is passed on (a write
//! shutdown) after the data before it, so half-closed connections behave as on a link.
//!
//! The kernel completes the TCP handshake on its own, so a client's `connect` returns at
//! once instead of after one round trip. To count the handshake anyway, nothing crosses
//! a connection before `accept + 2d` (the client's first bytes reach the target at
//! `accept + 3d`, exactly when they would after a real handshake). This is exact when
//! the connecting side writes first right after connecting, which browsers, tinyproxy
//! and an exit fetching a page do. It is not when the connecting side first answers
//! someone else: a jondo that waits for its exit's TCP connection before answering a
//! `CONNECT` gets that answer back one round trip (2d) early.
//!
//! The relay owns nothing but its listener and the two copies per connection. Bytes in
//! flight are bounded per direction ([`MAX_IN_FLIGHT`]); the delay is shared by every
//! relay of a run and changed only between measurements ([`Delay`]), and chunks wait on
//! a precise timer thread. There is no bandwidth limit: a link here has loopback speed
//! and no TCP slow start.

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most bytes one direction of one connection holds while they wait for their time:
/// a bug (or a flood) cannot make a relay eat memory.
pub const MAX_IN_FLIGHT: usize = 16 * 1024 * 1024;
/// Largest chunk read at once (one chunk is delayed and written as a unit).
pub const CHUNK: usize = 64 * 1024;
/// Most connections one relay carries at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// The one-way delay of every relay of a run, shared, and how chunks wait for their
/// time.
///
/// tokio's timers tick in whole milliseconds and fire up to a tick late, which over
/// the 40 link crossings of a page load on a 5-jondo path adds tens of milliseconds.
/// [`Delay::precise`] waits on a thread of its own instead (a futex with a deadline,
/// tens of microseconds late); [`Delay::default`] uses tokio's timers, which tests can
/// pause.
#[derive(Debug, Clone, Default)]
pub struct Delay {
    micros: Arc<AtomicU64>,
    timer: Option<Arc<PreciseTimer>>,
}

impl Delay {
    /// A delay whose chunks wait on a precise timer thread (stops when the last clone
    /// of this delay is dropped).
    pub fn precise() -> Result<Self> {
        Ok(Self {
            micros: Arc::default(),
            timer: Some(Arc::new(PreciseTimer::start()?)),
        })
    }

    /// Sets the delay for the chunks read from now on.
    pub fn set(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.micros.store(us, Ordering::Relaxed);
    }

    /// The current delay.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Waits until `due`.
    async fn until(&self, due: Instant) {
        if let Some(timer) = &self.timer {
            if timer.wait(due.into_std()).await {
                return;
            }
        }
        tokio::time::sleep_until(due).await;
    }
}

/// A deadline and whom to tell when it has passed.
type Waiter = (std::time::Instant, oneshot::Sender<()>);

/// Most waiters queued for the timer thread (each connection direction waits for one
/// chunk at a time; beyond this, a chunk waits on tokio's timer).
const TIMER_QUEUE: usize = 4 * MAX_CONNECTIONS;

/// A thread that wakes waiters at their deadlines, more precisely than tokio's timer.
#[derive(Debug)]
struct PreciseTimer {
    tx: std::sync::mpsc::SyncSender<Waiter>,
}

impl PreciseTimer {
    fn start() -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Waiter>(TIMER_QUEUE);
        std::thread::Builder::new()
            .name("wan-delay-timer".into())
            .spawn(move || Self::run(&rx))
            .context("start the delay timer thread")?;
        Ok(Self { tx })
    }

    /// Waits until `due`; false if the timer thread is gone or its queue is full (the
    /// caller then waits by itself).
    async fn wait(&self, due: std::time::Instant) -> bool {
        if due <= std::time::Instant::now() {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((due, tx)).is_ok() && rx.await.is_ok()
    }

    /// The thread: fires every waiter whose deadline has passed, then sleeps until the
    /// next deadline or the next waiter. Ends when every sender is gone and no waiter
    /// is left.
    fn run(rx: &std::sync::mpsc::Receiver<Waiter>) {
        use std::cmp::Reverse;
        use std::sync::mpsc::RecvTimeoutError;
        let mut heap: std::collections::BinaryHeap<Reverse<(std::time::Instant, u64)>> =
            std::collections::BinaryHeap::new();
        let mut waiting: std::collections::HashMap<u64, oneshot::Sender<()>> =
            std::collections::HashMap::new();
        let mut seq = 0u64;
        let mut open = true;
        loop {
            let now = std::time::Instant::now();
            while let Some(&Reverse((due, id))) = heap.peek() {
                if due > now {
                    break;
                }
                heap.pop();
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(());
                }
            }
            let next = heap.peek().map(|Reverse((due, _))| *due);
            let got = match (next, open) {
                (None, false) => return,
                (Some(due), false) => {
                    std::thread::sleep(due.saturating_duration_since(now));
                    continue;
                }
                (Some(due), true) => rx.recv_timeout(due.saturating_duration_since(now)),
                (None, true) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok((due, tx)) => {
                    seq += 1;
                    heap.push(Reverse((due, seq)));
                    waiting.insert(seq, tx);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
    }
}

/// One chunk on its way: written not before `due`; holds its share of the bytes bound.
struct Chunk {
    due: Instant,
    data: Bytes,
    _held: OwnedSemaphorePermit,
}

/// Copies `from` to `to`, holding every chunk until its arrival plus the delay (and not
/// before `open_at` plus the delay), in order, with at most `cap` bytes waiting. At the
/// end of `from`, shuts `to` down after the last chunk. Returns the bytes copied.
pub(crate) async fn pipe<R, W>(
    mut from: R,
    mut to: W,
    delay: &Delay,
    open_at: Instant,
    cap: usize,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cap = cap.max(1);
    let room = Arc::new(Semaphore::new(cap));
    // The semaphore bounds the bytes; every chunk holds at least one, so the channel
    // never fills before the semaphore runs out.
    let (tx, mut rx) = mpsc::channel::<Chunk>(cap);
    let read = async move {
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK.min(cap));
            let n = from.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let arrival = Instant::now().max(open_at);
            let held = room
                .clone()
                .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
                .await
                .map_err(|_| std::io::Error::other("relay closed"))?;
            let chunk = Chunk {
                due: arrival + delay.get(),
                data: buf.freeze(),
                _held: held,
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async {
        let mut copied = 0u64;
        while let Some(chunk) = rx.recv().await {
            delay.until(chunk.due).await;
            to.write_all(&chunk.data).await?;
            copied += chunk.data.len() as u64;
        }
        to.shutdown().await?;
        Ok::<u64, std::io::Error>(copied)
    };
    let ((), copied) = tokio::try_join!(read, write)?;
    Ok(copied)
}

/// Carries one accepted connection to `target`, both directions delayed.
async fn carry(client: TcpStream, peer: SocketAddr, target: SocketAddr, delay: Delay) {
    let accepted = Instant::now();
    let open_at = accepted + 2 * delay.get();
    let _ = client.set_nodelay(true);
    // From the client's own address where possible, so per-address rules at the target
    // see the real peer.
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return };
    if peer.ip().is_loopback() {
        let _ = socket.bind(SocketAddr::new(peer.ip(), 0));
    }
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(10), socket.connect(target)).await
    else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let _ = tokio::try_join!(
        pipe(cr, sw, &delay, open_at, MAX_IN_FLIGHT),
        pipe(sr, cw, &delay, open_at, MAX_IN_FLIGHT),
    );
}

/// Starts a delaying relay on `ip` (a port chosen by the system) in front of `target`;
/// returns its address. It serves until `shutdown`.
pub async fn start(
    ip: IpAddr,
    target: SocketAddr,
    delay: Delay,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .with_context(|| format!("bind a delay relay on {ip}"))?;
    let addr = listener.local_addr()?;
    let stop = shutdown.clone();
    crowds_net::net::spawn_accept_loop(listener, MAX_CONNECTIONS, shutdown, move |s, peer| {
        let (delay, stop) = (delay.clone(), stop.clone());
        async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = carry(s, peer, target, delay) => {}
            }
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const D: Duration = Duration::from_millis(25);

    fn delay(d: Duration) -> Delay {
        let delay = Delay::default();
        delay.set(d);
        delay
    }

    /// Reads exactly `n` bytes, returning them and when the last arrived.
    async fn read_n(r: &mut (impl AsyncRead + Unpin), n: usize) -> (Vec<u8>, Instant) {
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf).await.expect("read");
        (buf, Instant::now())
    }

    /// A relay between two in-memory streams, both directions delayed (as [`carry`]
    /// does with sockets), opened at `open_at`: returns the client's and the server's
    /// ends.
    fn relay(
        d: Duration,
        open_at: Instant,
        cap: usize,
    ) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (client, relay_in) = duplex(1 << 20);
        let (relay_out, server) = duplex(1 << 20);
        let (ir, iw) = tokio::io::split(relay_in);
        let (or, ow) = tokio::io::split(relay_out);
        let d = delay(d);
        tokio::spawn(async move {
            let _ = tokio::try_join!(
                pipe(ir, ow, &d, open_at, cap),
                pipe(or, iw, &d, open_at, cap)
            );
        });
        (client, server)
    }

    /// Timers tick in whole milliseconds: a chunk is due at its time, or within 1 ms.
    fn at(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed <= expected + Duration::from_millis(1)
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_arrive_in_order_each_after_the_delay() {
        let t0 = Instant::now();
        let (mut client, mut server) = relay(D, t0, 1 << 20);
        client.write_all(b"one").await.expect("write");
        // The client writes again 10 ms later (virtual time).
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.write_all(b"two").await.expect("write");
        let (first, at1) = read_n(&mut server, 3).await;
        assert_eq!(first, b"one");
        assert!(at(at1 - t0, D), "{:?}", at1 - t0);
        let (second, at2) = read_n(&mut server, 3).await;
        assert_eq!(second, b"two");
        assert!(
            at(at2 - t0, D + Duration::from_millis(10)),
            "{:?}",
            at2 - t0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_close_follows_the_data_and_the_other_direction_goes_on() {
        let t0 = Instant::now();
        let (mut client, mut server) = relay(D, t0, 1 << 20);
        client.write_all(b"last words").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.expect("read to end");
        assert_eq!(all, b"last words");
        assert!(Instant::now() - t0 >= D);
        let replied = Instant::now();
        server.write_all(b"reply").await.expect("server writes");
        server.shutdown().await.expect("server half-close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("client reads");
        assert_eq!(back, b"reply");
        assert!(at(Instant::now() - replied, D));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_crosses_before_the_emulated_handshake() {
        let t0 = Instant::now();
        let (mut client, mut server) = relay(D, t0 + 2 * D, 1 << 20);
        client.write_all(b"GET").await.expect("write");
        let (_, got) = read_n(&mut server, 3).await;
        assert!(at(got - t0, 3 * D), "{:?}", got - t0);
        // Later bytes pay the delay only.
        let sent = Instant::now();
        client.write_all(b"more").await.expect("write");
        let (_, got) = read_n(&mut server, 4).await;
        assert!(at(got - sent, D), "{:?}", got - sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_bound_on_bytes_in_flight_keeps_every_byte_in_order() {
        let (mut client, mut server) = relay(D, Instant::now(), 1000);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        tokio::spawn(async move { client.write_all(&sent).await });
        let (got, _) = read_n(&mut server, data.len()).await;
        assert!(got == data, "bytes reordered or changed");
    }

    /// Over real sockets: a request and its echo take at least the handshake (2d) plus
    /// one round trip (2d).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tcp_round_trip_through_the_relay_takes_the_handshake_and_two_delays() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = echo.accept().await {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                }
            }
        });
        let shutdown = CancellationToken::new();
        let d = Duration::from_millis(20);
        let precise = Delay::precise().expect("timer thread");
        precise.set(d);
        let relay = start(
            IpAddr::from([127, 0, 0, 1]),
            echo_addr,
            precise,
            shutdown.clone(),
        )
        .await
        .expect("relay");
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(relay).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(&buf, b"ping");
        assert!(started.elapsed() >= 4 * d, "{:?}", started.elapsed());
        shutdown.cancel();
    }
}
