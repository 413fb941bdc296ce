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

/// The wall clock in unix milliseconds: the daemons' one reading of it (clippy refuses
/// `SystemTime::now` elsewhere), so rules can take the time as an argument.
#[allow(clippy::disallowed_methods)]
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

/// The part of a client's address that one party controls: an IPv4 address itself, an
/// IPv6 address's /64 (one subscriber commonly holds a whole /64, so counting single
/// IPv6 addresses would give one machine billions of shares), and an IPv4-mapped IPv6
/// address as the IPv4 address it is. Per-address caps and throttles count by this.
pub fn source_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An accept loop that keeps a budget for trusted clients (a blender's members) apart
/// from everyone else's connections.
///
/// A connection from an address `is_trusted` approves first takes a permit of
/// `trusted`; when none is free the loop waits for one (further clients wait in the
/// kernel's backlog) and records that in `saturation`. Any other connection gets no
/// permit and never makes the loop wait. `admit` then decides at once whether to serve
/// the connection (it returns the future that serves it) or to close it (`None`); it
/// keeps its own budget for the untrusted. So strangers' connections, however many,
/// neither hold up the accept loop nor count as saturation: only the trusted budget
/// running out does.
pub fn spawn_sorting_accept_loop<T, F, Fut>(
    listener: TcpListener,
    trusted: Arc<Semaphore>,
    saturation: Option<Arc<Saturation>>,
    shutdown: CancellationToken,
    is_trusted: T,
    admit: F,
) -> tokio::task::JoinHandle<()>
where
    T: Fn(SocketAddr) -> bool + Send + 'static,
    F: Fn(TcpStream, SocketAddr, Option<tokio::sync::OwnedSemaphorePermit>) -> Option<Fut>
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = if is_trusted(peer) {
                match trusted.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(TryAcquireError::Closed) => return,
                    Err(TryAcquireError::NoPermits) => {
                        if let Some(s) = &saturation {
                            s.begin();
                        }
                        let p = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            p = trusted.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        };
                        if let Some(s) = &saturation {
                            s.end();
                        }
                        Some(p)
                    }
                }
            } else {
                None
            };
            let _ = stream.set_nodelay(true);
            if let Some(serve) = admit(stream, peer, permit) {
                tokio::spawn(serve);
            }
        }
    })
}

#[cfg(test)]
mod sorting_tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use tokio::io::AsyncReadExt;

    #[test]
    fn sources_group_what_one_party_holds() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(source_of(v4), v4);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(source_of(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        assert_eq!(
            source_of(a),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0))
        );
    }

    /// The trusted budget taken, a connection from an untrusted address is still
    /// accepted and handed to `admit` (which closes it here) without saturation; a
    /// trusted one waits for a permit, and that is saturation.
    #[tokio::test]
    async fn strangers_never_wait_and_never_saturate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let trusted = Arc::new(Semaphore::new(1));
        let saturation = Arc::new(Saturation::default());
        let shutdown = CancellationToken::new();
        let (release, released) = tokio::sync::watch::channel(false);
        let strangers_seen = Arc::new(AtomicU64::new(0));
        let seen = strangers_seen.clone();
        let _loop = spawn_sorting_accept_loop(
            listener,
            trusted.clone(),
            Some(saturation.clone()),
            shutdown.clone(),
            |peer: SocketAddr| peer.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST),
            move |_stream, _peer, permit| {
                let Some(permit) = permit else {
                    seen.fetch_add(1, Ordering::SeqCst);
                    return None;
                };
                let mut released = released.clone();
                Some(async move {
                    let _ = released.wait_for(|r| *r).await;
                    drop(permit);
                })
            },
        );
        let connect_from = |ip: Ipv4Addr| async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .expect("bind source");
            socket.connect(addr).await.expect("connect")
        };
        let _member = connect_from(Ipv4Addr::LOCALHOST).await;
        // Strangers come and are closed at once, the trusted budget being taken.
        for _ in 0..3 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2)).await;
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("a stranger is closed at once");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        assert_eq!(strangers_seen.load(Ordering::SeqCst), 3);
        assert_eq!(
            saturation.last_at(now_ms()),
            None,
            "strangers saturate nothing"
        );
        // A second trusted connection must wait: saturation, until the first ends.
        let _second = connect_from(Ipv4Addr::LOCALHOST).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while saturation.last_at(u64::MAX - 1) != Some(u64::MAX - 1) {
            assert!(std::time::Instant::now() < deadline, "never saturated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.send(true).expect("release");
        while saturation.last_at(u64::MAX - 1) == Some(u64::MAX - 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "saturation never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    }
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

/// Raises this process's soft limit on open files to its hard limit, so that every
/// listener's connection cap can be reached without starving the daemon's own
/// connections (the common soft limit of 1,024 is less than a jondo's caps together).
/// Returns the soft limit before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let now = rlimit::increase_nofile_limit(hard)?;
    Ok((soft, now))
}

/// Open files a daemon should be allowed: every listener's cap together, with room
/// for its own outgoing connections, store and logs.
pub const OPEN_FILES_WANTED: u64 = 8192;

/// The soft and hard limit on open files.
pub fn open_files_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok((soft, hard))
}

/// Connections per source address on one listener (or per any other key, such as a
/// member's public key): a single machine cannot take every slot of a listener,
/// whatever it sends (or does not send).
#[derive(Debug)]
pub struct PerAddress<K = std::net::IpAddr> {
    limit: usize,
    counts: std::sync::Mutex<std::collections::HashMap<K, usize>>,
}

/// One connection's place in a [`PerAddress`] count; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot<K: std::hash::Hash + Eq = std::net::IpAddr> {
    owner: Arc<PerAddress<K>>,
    ip: K,
}

impl<K: std::hash::Hash + Eq + Clone> PerAddress<K> {
    /// At most `limit` connections from any one address.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Default::default(),
        })
    }

    /// A slot for one more connection from `ip`, if it has fewer than the limit. The
    /// table holds only addresses with open connections, so it is bounded by the
    /// listener's own connection cap.
    pub fn try_take(self: &Arc<Self>, ip: K) -> Option<AddressSlot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip.clone()).or_insert(0);
        if *n >= self.limit {
            if *n == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Open connections from `ip`.
    pub fn count(&self, ip: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(ip).copied().unwrap_or(0)
    }
}

impl<K: std::hash::Hash + Eq> Drop for AddressSlot<K> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Connections still in their TLS handshake, at most `limit` at once. When a new one
/// comes and all places are taken, the one waiting longest is cut off: an honest peer
/// completes its handshake in milliseconds, so idle connections held open by a flood
/// are always the oldest, and a member's connection gets in unless the flood opens
/// `limit` new connections within the member's own handshake time.
#[derive(Debug)]
pub struct Handshakes {
    limit: usize,
    pending: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
    evicted: AtomicU64,
}

/// A place among the pending handshakes; cancelled when evicted, freed when dropped.
#[derive(Debug)]
pub struct HandshakeTicket {
    owner: Arc<Handshakes>,
    id: u64,
    /// Cancelled when a newer connection needed the place.
    pub evicted: CancellationToken,
}

impl Handshakes {
    /// At most `limit` (at least 1) handshakes pending at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            pending: Default::default(),
            evicted: AtomicU64::new(0),
        })
    }

    /// A place for a new handshake, evicting the oldest pending one if all are taken.
    pub fn enter(self: &Arc<Self>) -> HandshakeTicket {
        let token = CancellationToken::new();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.1.len() >= self.limit {
            if let Some((_, oldest)) = pending.1.pop_front() {
                oldest.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        pending.0 += 1;
        let id = pending.0;
        pending.1.push_back((id, token.clone()));
        HandshakeTicket {
            owner: self.clone(),
            id,
            evicted: token,
        }
    }

    /// Handshakes pending now.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .len()
    }

    /// Handshakes cut off so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        let mut pending = self.owner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = pending.1.iter().position(|(id, _)| *id == self.id) {
            pending.1.remove(i);
        }
    }
}

/// Allows an action at most once per interval (for work a stranger can trigger).
#[derive(Debug, Default)]
pub struct OncePer {
    last_ms: AtomicU64,
}

impl OncePer {
    /// Whether the action may run at `now_ms`, at least `interval` after the last time it
    /// was allowed; if so, records `now_ms`.
    pub fn allow(&self, now_ms: u64, interval: Duration) -> bool {
        let interval = interval.as_millis() as u64;
        self.last_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                (last == 0 || now_ms.saturating_sub(last) >= interval).then_some(now_ms.max(1))
            })
            .is_ok()
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let caps = PerAddress::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let first = caps.try_take(a).expect("first");
        let _second = caps.try_take(a).expect("second");
        assert!(caps.try_take(a).is_none(), "a third from the same address");
        let _other = caps.try_take(b).expect("another address is not affected");
        drop(first);
        assert_eq!(caps.count(&a), 1);
        assert!(
            caps.try_take(a).is_some(),
            "a closed connection gives its slot back"
        );
        assert_eq!(caps.count(&IpAddr::V4(Ipv4Addr::LOCALHOST)), 0);
    }

    #[test]
    fn the_oldest_pending_handshake_makes_room() {
        let gate = Handshakes::new(3);
        let tickets: Vec<_> = (0..3).map(|_| gate.enter()).collect();
        assert_eq!(gate.pending(), 3);
        let newest = gate.enter();
        assert!(tickets[0].evicted.is_cancelled(), "the oldest is cut off");
        assert!(!tickets[1].evicted.is_cancelled() && !newest.evicted.is_cancelled());
        assert_eq!(gate.pending(), 3);
        assert_eq!(gate.evicted(), 1);
        drop(tickets);
        assert_eq!(
            gate.pending(),
            1,
            "finished handshakes give their place back"
        );
    }

    #[test]
    fn once_per_interval() {
        let once = OncePer::default();
        let every = Duration::from_secs(30);
        assert!(once.allow(1_000, every));
        assert!(!once.allow(1_001, every));
        assert!(!once.allow(30_999, every));
        assert!(once.allow(31_000, every));
    }
}
