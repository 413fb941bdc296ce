//! Section 7, WAN: page loads over links with a one-way delay d, beside their lower
//! bounds (issue 18).
//!
//! Users feel round trips, and on loopback there are none. Here every link that would
//! cross a network has one: a delay relay ([`delay`]) sits in front of each jondo's peer
//! port (the jondo advertises the relay's address, so the crowd document lists it and
//! every link to that jondo crosses it) and in front of the origin (the page's URLs name
//! the relay, so direct loads, tinyproxy and the crowd's exits all pay d each way). The
//! client's link to its first proxy is local, as a browser's to its own jondo.
//!
//! Layout:
//! - [`delay`]: the delaying TCP relay;
//! - [`page`]: the page (HTML and 40 objects) and its origin, HTTP/1.1 and HTTPS (h2);
//! - [`browser`]: the browser model, one timed page load per call;
//! - [`bounds`]: each way's lower bound;
//! - [`report`]: the section's table and its targets;
//! - this file: the WAN crowd and the measuring loop.
//!
//! Ways: direct; tinyproxy; crowd paths of exactly k jondos (crowds-jondo's `bench`
//! feature); the crowd at pf = 0.75 with normal routing; for HTTPS also exact paths
//! whose initiator has optimistic tunnels off. The WAN crowd has 8 jondos on
//! 127.0.6.2-9 behind relays on 127.0.7.2-9: 6 with optimistic tunnels on (the
//! initiators of every crowd row but the "off" ones) and 2 with them off (the
//! initiators of those rows); any member relays. Before measuring, small requests over
//! exact paths open every link between them. At each delay, loads go in rounds: one
//! load per way per round, the first round unmeasured, initiators in turn. The crowd's
//! counters give each load's path length (and show that a plain-HTTP load is one
//! request into the crowd: the objects come with the page).

mod bounds;
mod browser;
mod delay;
mod page;
pub(crate) mod report;

use crate::client::{self, Target};
use crate::crowd::{self, Crowd};
use crate::proxies::Proxy;
use crate::results::{Results, Settings, WanRow, WanSetup};
use anyhow::{bail, Context, Result};
use bounds::Model;
use browser::Way;
use crowds_jondo::jondo::JondoConfig;
use delay::Delay;
use page::Page;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Jondos of the WAN crowd with optimistic tunnels on.
const OPTIMISTIC_JONDOS: usize = 6;
/// Jondos of the WAN crowd with optimistic tunnels off.
const WAITING_JONDOS: usize = 2;
/// Small requests per round that open the links (each crosses k - 1 of them).
const WARM_REQUESTS: usize = 400;
/// Rounds of those at most, until every link is open.
const WARM_ROUNDS: usize = 5;
/// Page loads that measure the origin with no delay (after one warm-up).
const ORIGIN_LOADS: usize = 9;

fn progress(text: &str) {
    eprintln!("[crowds-bench] wan: {text}");
}

/// Which protocol a way loads the page with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Https,
}

/// One way to measure at each delay.
struct WanWay {
    name: String,
    way: &'static str,
    protocol: Protocol,
    k: Option<usize>,
    /// Exact path length while it loads (`None`: direct, tinyproxy, or pf routing).
    exact: Option<usize>,
    /// Where the client connects, taken in turn load by load.
    entries: Vec<Way>,
}

impl WanWay {
    /// The bound of one load on a path of `k` jondos (0: no crowd).
    fn bound(&self, m: &Model, k: usize) -> Duration {
        match (self.protocol, self.way) {
            (Protocol::Http, "direct") => m.http_direct(),
            (Protocol::Http, "tinyproxy") => m.http_tinyproxy(),
            (Protocol::Http, _) => m.http_crowd(k),
            (Protocol::Https, "direct" | "tinyproxy") => m.https_direct(),
            (Protocol::Https, _) => m.https_crowd(k),
        }
    }
}

/// Jondo `i` of the WAN crowd: its peer address's IP, and its relay's.
fn wan_ips(i: usize) -> (IpAddr, IpAddr) {
    let host = 2 + i as u8;
    (
        IpAddr::V4(Ipv4Addr::new(127, 0, 6, host)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 7, host)),
    )
}

/// Starts the WAN crowd: each jondo's peer port behind a delay relay that it
/// advertises. The peer port is chosen here (bound and released on an address no one
/// else uses), since the relay must know it before the jondo joins: the blender checks
/// the advertised address during the join.
async fn start_crowd(s: &Settings, delay: &Delay, shutdown: &CancellationToken) -> Result<Crowd> {
    let n = OPTIMISTIC_JONDOS + WAITING_JONDOS;
    let mut addrs = Vec::new();
    for i in 0..n {
        let (ip, relay_ip) = wan_ips(i);
        let peer = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("a peer port on {ip}"))?;
        let relay = delay::start(relay_ip, peer, delay.clone(), shutdown.clone()).await?;
        addrs.push((peer, relay));
    }
    let tweak: crowd::Tweak = Arc::new(move |i: usize, c: &mut JondoConfig| {
        if let Some(&(peer, relay)) = addrs.get(i) {
            c.peer_listen = peer;
            c.advertise = Some(relay);
        }
        c.optimistic_tunnels = i < OPTIMISTIC_JONDOS;
    });
    let crowd = crowd::start_in_process_with(
        n,
        0,
        s.pf,
        shutdown.clone(),
        s.hop_threads.then_some(s.jondo_threads),
        Some(tweak),
    )
    .await
    .context("the WAN crowd (jondos advertising their delay relays)")?;
    for (i, j) in crowd.jondos.iter().enumerate() {
        let listed = j.node.crowd().and_then(|c| {
            c.doc
                .members
                .iter()
                .find(|m| m.addr.ip() == wan_ips(i).1)
                .map(|m| m.addr)
        });
        if listed.is_none() {
            bail!("jondo {} is not listed at its relay's address", i + 1);
        }
    }
    Ok(crowd)
}

/// Opens the links between the WAN crowd's jondos (no delay yet): rounds of small
/// requests over exact paths of 5 from every jondo, until every jondo has a link to
/// every other. Returns the links open.
async fn open_links(crowd: &Crowd, origin: SocketAddr) -> Result<usize> {
    let n = crowd.jondos.len();
    let open = || -> usize { crowd.jondos.iter().map(|j| j.node.open_links()).sum() };
    crowd::set_path_length(Some(5));
    for _ in 0..WARM_ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16 {
            let target = Target::proxy(crowd.jondos[w % n].proxy_addr, origin);
            tasks.spawn(async move {
                let mut sender = client::connect(&target).await?;
                for _ in 0..WARM_REQUESTS / 16 {
                    client::get_small(&mut sender, &target, page::SMALL).await?;
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done?.context("opening the WAN crowd's links")?;
        }
        if open() >= n * (n - 1) {
            break;
        }
    }
    crowd::set_path_length(None);
    Ok(open())
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len();
    if m % 2 == 1 {
        v[m / 2]
    } else {
        (v[m / 2 - 1] + v[m / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Everything one load needs besides its way.
struct Bench {
    page: Arc<Page>,
    tls: Arc<rustls::ClientConfig>,
    /// What the page's URLs name: the origin's relays (or the origin itself).
    http: SocketAddr,
    https: SocketAddr,
    next_load: u64,
}

impl Bench {
    async fn load(&mut self, protocol: Protocol, way: Way) -> Result<Duration> {
        self.next_load += 1;
        let (page, id) = (self.page.clone(), self.next_load);
        match protocol {
            Protocol::Http => browser::load_http(way, self.http, page, id).await,
            Protocol::Https => {
                browser::load_https(way, self.https, self.tls.clone(), page, id).await
            }
        }
    }
}

/// Median of `n` loads straight to the origin, no relay, after one warm-up.
async fn origin_ms(bench: &mut Bench, protocol: Protocol, n: usize) -> Result<f64> {
    let connect = match protocol {
        Protocol::Http => bench.http,
        Protocol::Https => bench.https,
    };
    let way = Way {
        connect,
        proxy: false,
    };
    let mut times = Vec::new();
    for i in 0..=n {
        let t = bench
            .load(protocol, way)
            .await
            .context("origin, no delay")?;
        if i > 0 {
            times.push(ms(t));
        }
    }
    Ok(median(&times))
}

/// The ways measured at each delay.
fn ways(
    s: &Settings,
    crowd: &Crowd,
    tinyproxy: Option<SocketAddr>,
    http: SocketAddr,
    https: SocketAddr,
) -> Vec<WanWay> {
    let proxy = |connect| Way {
        connect,
        proxy: true,
    };
    let initiators = |range: std::ops::Range<usize>| -> Vec<Way> {
        crowd.jondos[range]
            .iter()
            .map(|j| proxy(j.proxy_addr))
            .collect()
    };
    let optimistic = initiators(0..OPTIMISTIC_JONDOS);
    let waiting = initiators(OPTIMISTIC_JONDOS..crowd.jondos.len());
    let mut out = Vec::new();
    for (protocol, origin) in [(Protocol::Http, http), (Protocol::Https, https)] {
        let way = |name: String, way, k, exact, entries| WanWay {
            name,
            way,
            protocol,
            k,
            exact,
            entries,
        };
        let direct = Way {
            connect: origin,
            proxy: false,
        };
        out.push(way("direct".into(), "direct", Some(0), None, vec![direct]));
        if let Some(t) = tinyproxy {
            out.push(way(
                "tinyproxy".into(),
                "tinyproxy",
                Some(1),
                None,
                vec![proxy(t)],
            ));
        }
        for &k in &s.wan_ks {
            out.push(way(
                "crowd, exact path".into(),
                "crowd",
                Some(k),
                Some(k),
                optimistic.clone(),
            ));
        }
        if protocol == Protocol::Https {
            for &k in &s.wan_ks {
                out.push(way(
                    "crowd, exact, optimistic off".into(),
                    "crowd-waiting",
                    Some(k),
                    Some(k),
                    waiting.clone(),
                ));
            }
        }
        out.push(way(
            format!("crowd, pf = {}", s.pf),
            "crowd-pf",
            None,
            None,
            optimistic.clone(),
        ));
    }
    out
}

/// One way's loads at one delay, as they are collected.
#[derive(Default)]
struct Samples {
    ms: Vec<f64>,
    lengths: Vec<usize>,
    errors: usize,
    first_error: Option<String>,
    /// Loads that sent more than one request into the crowd.
    spread: usize,
}

/// Runs the WAN section: adds its rows, its set-up and its notes to `results`.
pub(crate) async fn wan(
    s: &Settings,
    tinyproxy: &Option<Proxy>,
    shutdown: &CancellationToken,
    results: &mut Results,
) -> Result<()> {
    let shutdown = shutdown.child_token();
    let _stop = shutdown.clone().drop_guard();
    let delay = Delay::precise()?;
    let page = Arc::new(Page::new());
    progress("origin on 127.0.0.1 (HTTP/1.1 and HTTPS with h2), behind delay relays");
    let origin = page::start(page.clone(), shutdown.clone()).await?;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let http_relay = delay::start(local, origin.http, delay.clone(), shutdown.clone()).await?;
    let https_relay = delay::start(local, origin.https, delay.clone(), shutdown.clone()).await?;
    progress("a crowd of 8 jondos (127.0.6.2-9) behind delay relays (127.0.7.2-9)");
    let crowd = start_crowd(s, &delay, &shutdown).await?;
    let links = open_links(&crowd, http_relay).await?;
    let mut bench = Bench {
        page: page.clone(),
        tls: origin.client_tls.clone(),
        http: origin.http,
        https: origin.https,
        next_load: 0,
    };
    progress("the page over loopback, no delay");
    let origin_http = origin_ms(&mut bench, Protocol::Http, ORIGIN_LOADS).await?;
    let origin_https = origin_ms(&mut bench, Protocol::Https, ORIGIN_LOADS).await?;
    (bench.http, bench.https) = (http_relay, https_relay);
    let n = crowd.jondos.len();
    results.wan_setup = Some(WanSetup {
        objects: page.objects.len(),
        object_bytes: page.object_bytes(),
        html_bytes: page.html(1).len(),
        connections: browser::CONNECTIONS,
        jondos: [OPTIMISTIC_JONDOS, WAITING_JONDOS],
        links_open: links,
        origin_http_ms: origin_http,
        origin_https_ms: origin_https,
    });
    if links < n * (n - 1) {
        results.notes.push(format!(
            "wan: only {links} of {} links between the WAN crowd's jondos were open before measuring",
            n * (n - 1)
        ));
    }
    let tiny = tinyproxy.as_ref().map(|p| p.addr);
    if tiny.is_none() {
        results
            .notes
            .push("wan: tinyproxy rows skipped (tinyproxy is not installed)".into());
    }
    let ways = ways(s, &crowd, tiny, http_relay, https_relay);
    for &d_ms in &s.wan_delays_ms {
        let d = Duration::from_millis(d_ms);
        delay.set(d);
        // The exits' connects to the origin take the link's round trip, as a handshake
        // does (the relay in front of the origin cannot delay them).
        crowd::set_exit_connect_delay(Some(2 * d));
        progress(&format!(
            "d = {d_ms} ms: {} ways, {} loads each after one warm-up",
            ways.len(),
            s.wan_loads
        ));
        let mut samples: Vec<Samples> = ways.iter().map(|_| Samples::default()).collect();
        for round in 0..=s.wan_loads {
            for (w, got) in ways.iter().zip(samples.iter_mut()) {
                crowd::set_path_length(w.exact);
                let entry = w.entries[round % w.entries.len()];
                let (r0, i0) = (crowd.relayed(), crowd.initiated());
                let loaded = bench.load(w.protocol, entry).await;
                let (r1, i1) = (crowd.relayed(), crowd.initiated());
                crowd::set_path_length(None);
                if round == 0 {
                    continue;
                }
                match loaded {
                    Ok(t) => {
                        got.ms.push(ms(t));
                        let requests = (i1 - i0).max(1);
                        got.lengths.push(1 + ((r1 - r0) / requests) as usize);
                        if i1 - i0 > 1 {
                            got.spread += 1;
                        }
                    }
                    Err(e) => {
                        got.errors += 1;
                        got.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }
        for (w, got) in ways.iter().zip(samples) {
            let origin = match w.protocol {
                Protocol::Http => origin_http,
                Protocol::Https => origin_https,
            };
            let model = Model {
                d,
                objects: page.objects.len(),
                connections: browser::CONNECTIONS,
                origin: Duration::from_secs_f64(origin.max(0.0) / 1000.0),
            };
            results.wan.push(row(w, &model, d_ms, got));
        }
    }
    crowd::set_path_length(None);
    crowd::set_exit_connect_delay(None);
    shutdown.cancel();
    Ok(())
}

/// The row of one way at one delay.
fn row(w: &WanWay, model: &Model, d_ms: u64, got: Samples) -> WanRow {
    let in_crowd = w.way.starts_with("crowd");
    let bounds: Vec<f64> = got
        .lengths
        .iter()
        .map(|&len| ms(w.bound(model, w.k.unwrap_or(len))))
        .collect();
    let ratios: Vec<f64> = got.ms.iter().zip(&bounds).map(|(m, b)| m / b).collect();
    let mut notes = Vec::new();
    if in_crowd {
        if let Some(k) = w.exact {
            if got.lengths.iter().any(|&l| l != k) {
                notes.push(format!("path lengths seen: {:?}", got.lengths));
            }
        }
        if got.spread > 0 && w.protocol == Protocol::Http {
            notes.push(format!(
                "{} loads sent more than the page into the crowd",
                got.spread
            ));
        }
    }
    if let Some(e) = &got.first_error {
        notes.push(format!("{} failed, first: {e}", got.errors));
    }
    let waiting = (w.way == "crowd-waiting").then_some(w.k).flatten();
    let todays = waiting.map(|k| ms(model.https_crowd_waiting(k)));
    WanRow {
        way: w.way.into(),
        name: w.name.clone(),
        protocol: match w.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
        .into(),
        delay_ms: d_ms,
        k: w.k,
        path_lengths: if in_crowd { got.lengths } else { Vec::new() },
        loads: got.ms.len(),
        errors: got.errors,
        median_ms: median(&got.ms),
        min_ms: got.ms.iter().copied().fold(f64::NAN, f64::min),
        max_ms: got.ms.iter().copied().fold(f64::NAN, f64::max),
        bound_ms: median(&bounds),
        ratio: median(&ratios),
        todays_bound_ms: todays,
        note: notes.join("; "),
    }
}
