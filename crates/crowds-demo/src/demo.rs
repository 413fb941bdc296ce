//! `crowds demo`: a whole crowd on this machine, ready to browse.
//!
//! Owns the orchestration only: a blender, N jondos on 127.0.0.2, 127.0.0.3, … and the
//! sample site, all in this process, with accounts and passwords made up on the spot in
//! a private temporary directory (removed at the end). With `requests`, it fetches pages
//! through random members and reports which member the server saw for each.

use crate::site::{self, Site};
use bytes::Bytes;
use crowds_blender::store::Store;
use crowds_blender::{self as blender, BlenderConfig, RunningBlender};
use crowds_jondo::jondo::{self, JondoConfig, RunningJondo};
use crowds_net::body::BoxError;
use crowds_net::error::NodeError;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Number of jondos.
    pub jondos: usize,
    /// The crowd's pf.
    pub forward_probability: f64,
    /// Port of the first jondo's HTTP proxy (0: any free port).
    pub proxy_port: u16,
}

/// A crowd running in this process.
pub struct DemoCrowd {
    /// The blender.
    pub blender: RunningBlender,
    /// The jondos, in order (jondo i on 127.0.0.(i+2)).
    pub jondos: Vec<RunningJondo>,
    /// The sample site.
    pub site: Site,
    _dir: tempfile::TempDir,
}

fn random_password() -> String {
    let bytes: [u8; 18] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// A step of [`start_with_progress`], for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Accounts created so far (each costs an argon2 hash).
    Accounts(usize, usize),
    /// The blender and the sample site are up.
    Blender,
    /// Jondos started and logged in so far.
    Jondos(usize, usize),
    /// Jondos that hold a document listing the whole crowd.
    Forming(usize, usize),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Accounts(done, all) => write!(f, "[1/4] creating accounts {done}/{all}"),
            Step::Blender => write!(f, "[2/4] blender and sample site started"),
            Step::Jondos(done, all) => write!(f, "[3/4] starting jondos {done}/{all}"),
            Step::Forming(done, all) => {
                write!(f, "[4/4] jondos that see the whole crowd {done}/{all}")
            }
        }
    }
}

/// Starts the whole crowd and waits until every jondo is admitted.
pub async fn start(
    config: &DemoConfig,
    shutdown: CancellationToken,
) -> Result<DemoCrowd, NodeError> {
    start_with_progress(config, shutdown, &|_| {}).await
}

/// Like [`start`], reporting each step to `progress`.
pub async fn start_with_progress(
    config: &DemoConfig,
    shutdown: CancellationToken,
    progress: &(dyn Fn(Step) + Sync),
) -> Result<DemoCrowd, NodeError> {
    if config.jondos == 0 || config.jondos > 250 {
        return Err(NodeError::Config(
            "--jondos must be between 1 and 250".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("crowds-demo-")
        .tempdir()
        .map_err(|e| NodeError::io("cannot create a temporary directory", e))?;
    let blender_dir = dir.path().join("blender");
    let mut passwords = Vec::new();
    {
        let mut store = Store::open(&blender_dir)?;
        for i in 0..config.jondos {
            let pw = random_password();
            store.add_account(&format!("demo{}", i + 1), &pw)?;
            passwords.push(pw);
            progress(Step::Accounts(i + 1, config.jondos));
        }
    }
    let mut bconf = BlenderConfig::new(blender_dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    bconf.forward_probability = config.forward_probability;
    bconf.join_interval = Duration::from_millis(500);
    // A demo's members come and go within minutes: a stopped one is dropped as soon as
    // it misses the heartbeat timeout, not after a day.
    bconf.grace_period = bconf.heartbeat_timeout;
    bconf.control_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let blender = blender::start(bconf, shutdown.clone()).await?;
    let site = site::start(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone()).await?;
    progress(Step::Blender);
    let mut jondos = Vec::new();
    for (i, password) in passwords.into_iter().enumerate() {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
        // The first jondo gets the requested port if it is free, any port otherwise.
        let proxy_port =
            if i == 0 && std::net::TcpListener::bind(("127.0.0.1", config.proxy_port)).is_ok() {
                config.proxy_port
            } else {
                0
            };
        // The library's defaults, but for what a one-machine demo needs: the sample
        // site is on loopback (a private destination), and a quick first document.
        let mut jc = JondoConfig::new(
            dir.path().join(format!("jondo{}", i + 1)),
            blender.addr.to_string(),
            blender.public_key,
            format!("demo{}", i + 1),
            crowds_net::safelog::Secret::new(password),
            SocketAddr::new(ip, 0),
        );
        jc.proxy_listen = SocketAddr::from(([127, 0, 0, 1], proxy_port));
        jc.socks_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        jc.allow_private_destinations = true;
        jc.poll_interval = Duration::from_millis(500);
        jondos.push(jondo::start(jc, shutdown.clone()).await?);
        progress(Step::Jondos(i + 1, config.jondos));
    }
    // Wait (bounded) until every jondo holds a document listing all of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    loop {
        let ready = jondos
            .iter()
            .filter(|j| {
                j.node
                    .crowd()
                    .is_some_and(|c| c.self_id.is_some() && c.doc.members.len() == config.jondos)
            })
            .count();
        if ready != last {
            progress(Step::Forming(ready, config.jondos));
            last = ready;
        }
        if ready == config.jondos {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeError::Config(
                "the demo crowd did not form within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(DemoCrowd {
        blender,
        jondos,
        site,
        _dir: dir,
    })
}

/// Fetches `url` through the HTTP proxy at `proxy`; returns status and body.
pub async fn fetch_via(proxy: SocketAddr, url: &str) -> Result<(StatusCode, Bytes), BoxError> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(url).body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req)).await??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One row of the demo's report.
#[derive(Debug, Clone)]
pub struct Visit {
    /// Request number.
    pub n: usize,
    /// The member whose user made the request (1-based).
    pub initiator: usize,
    /// The address the server saw.
    pub seen_as: String,
}

/// Fetches `k` pages through random members and returns who the server saw.
pub async fn browse(crowd: &DemoCrowd, k: usize) -> Result<Vec<Visit>, BoxError> {
    let url = format!("http://{}/whoami", crowd.site.addr);
    let mut visits = Vec::with_capacity(k);
    for n in 1..=k {
        let initiator = rand::thread_rng().gen_range(0..crowd.jondos.len());
        let (status, body) = fetch_via(crowd.jondos[initiator].proxy_addr, &url).await?;
        if status != StatusCode::OK {
            return Err(format!("request {n} failed with {status}").into());
        }
        visits.push(Visit {
            n,
            initiator: initiator + 1,
            seen_as: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(visits)
}
