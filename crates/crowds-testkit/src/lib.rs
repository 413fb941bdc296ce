//! The test kit of the crowds integration tests (`crates/crowds/tests/`): a dev-only
//! crate, never shipped.
//!
//! # Layout
//!
//! - this file: [`Kit`] (which `crowds` binary the tests run), addresses on
//!   127.0.0.0/8, bounded polling ([`eventually`]), file helpers;
//! - [`process`]: the binary as child processes ([`Proc`], killed on drop) and one-shot
//!   commands (`account add`, any command run to its end);
//! - [`crowd`]: a blender and N jondos on 127.0.0.x ([`Crowd::builder`]);
//! - [`client`]: a small HTTP/1.1 client ([`HttpClient`]) and deterministic bodies;
//! - [`origin`]: the recording origin server ([`Origin`]);
//! - [`fake_blender`]: a blender that serves whatever document a test chooses;
//! - [`life`]: a crowd whose processes a test kills, stops and restarts ([`life::LifeCrowd`]);
//! - [`measure`]: a crowd of the measurement build with collaborators, and statistics;
//! - [`web`]: real clients (curl, Python, Chromium), a test CA, web origins, path probes;
//! - [`netns`]: a crowd spread over network namespaces (root, iproute2, nftables);
//! - [`postgres`]: a private PostgreSQL cluster.
//!
//! Everything listens and connects on 127.0.0.0/8 only (or in namespaces the kit
//! creates). No helper sleeps to synchronise: waits poll a condition with short pauses
//! and fail with a clear message at a deadline.
//!
//! The kit cannot know where cargo put the `crowds` binary (`CARGO_BIN_EXE_crowds` is
//! only set for the crates/crowds tests themselves), so each test file names it once:
//!
//! ```text
//! const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));
//! let crowd = Crowd::builder(KIT, 4).start().await;
//! ```

pub mod client;
pub mod crowd;
pub mod fake_blender;
pub mod life;
pub mod measure;
pub mod netns;
pub mod origin;
pub mod postgres;
pub mod process;
pub mod web;

pub use client::*;
pub use crowd::*;
pub use origin::*;
pub use process::*;

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Which `crowds` binary the helpers start. Integration tests of `crates/crowds` make
/// one with `Kit::new(env!("CARGO_BIN_EXE_crowds"))`: cargo builds that binary before
/// the tests and only tells the tests of its own package where it is.
#[derive(Clone, Copy, Debug)]
pub struct Kit {
    bin: &'static str,
}

impl Kit {
    /// A kit starting the binary at `bin`.
    pub const fn new(bin: &'static str) -> Kit {
        Kit { bin }
    }

    /// The binary's path.
    pub fn bin(&self) -> &'static Path {
        Path::new(self.bin)
    }

    /// A command running the binary (no arguments yet).
    pub fn command(&self) -> Command {
        Command::new(self.bin)
    }
}

/// `CROWDS_FULL=1`: the long versions of the heavy suites (more members, kills,
/// requests, epochs, bigger transfers).
pub fn full_mode() -> bool {
    std::env::var("CROWDS_FULL").is_ok_and(|v| v == "1")
}

/// Pause between two looks at a polled condition.
pub const POLL: Duration = Duration::from_millis(50);

/// Time a crowd has to form (every jondo admitted, every document listing all).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed for one proxied request to produce its response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The peer address of jondo `i` (0-based) of a crowd: 127.0.0.(11 + i).
pub fn jondo_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + u8::try_from(i).expect("small crowd"))
}

/// A port that was free on `ip` a moment ago. It is picked below the kernel's
/// ephemeral range (32768 and up), which outgoing connections of busy tests use all the
/// time, so another socket is unlikely to take it before the process under test binds.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 12_000 + (std::process::id() % 1000) as u16 * 20;
    for _ in 0..20_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 20_000;
        let port = 12_000 + (start - 12_000 + offset) % 20_000;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind a probe listener");
    l.local_addr().expect("probe address").port()
}

/// A free address on 127.0.0.1.
pub fn free_local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port(Ipv4Addr::LOCALHOST)))
}

/// Polls `check` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics
/// naming `what` and the last reason otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last state: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Writes `text` to `path` with `mode`.
pub fn write_file_mode(path: &Path, text: &str, mode: u32) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    // The umask may have narrowed the mode: set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}
