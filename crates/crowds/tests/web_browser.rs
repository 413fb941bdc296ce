//! The whole web through the crowd (issue 3): a real browser. Headless Chromium loads
//! a local site (HTML, a style sheet, an image, a script that writes into the DOM)
//! through a crowd of five jondo processes, over HTTP and over HTTPS (CONNECT, with the
//! test CA's server key trusted by its SPKI hash). The page must render, every request
//! must reach the origin from a crowd member's address (never the test's 127.0.0.1),
//! and over plain HTTP the timing defence must have answered the browser's requests for
//! the embedded objects at the initiator, from the page bundle the exit sent.
//!
//! Chromium sends requests for loopback addresses directly, bypassing any proxy; with
//! `--proxy-server` that is undone by `--proxy-bypass-list=<-loopback>`, but Chromium
//! (156) ignores that list when the proxy comes from a PAC URL (`--proxy-pac-url`): the
//! origin then sees 127.0.0.1. So the browser runs use `--proxy-server` with the
//! address the jondo's `/proxy.pac` names, and the PAC file itself is checked.
//!
//! Also prints the page-load time (the whole Chromium process) through the crowd and
//! direct, for the same page (several runs each; more with `CROWDS_FULL=1`).

use crowds_testkit::web;

use crowds_testkit::*;
use hyper::StatusCode;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use web::*;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const N: usize = 5;
/// Time one Chromium run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// How Chromium reaches the web.
#[derive(Clone, Copy)]
enum Via {
    /// `--proxy-server=http://ADDR --proxy-bypass-list=<-loopback>`.
    Proxy(SocketAddr),
    /// No proxy.
    Direct,
}

/// Chromium's command line for one headless run: `action` (`--dump-dom` or
/// `--screenshot=FILE`) on `url`, with a fresh profile in `profile`. Names other than
/// localhost do not resolve, and background traffic is off, so the browser talks only
/// to 127.0.0.0/8.
fn chromium_args(
    profile: &Path,
    via: Via,
    spki: Option<&str>,
    action: &[&str],
    url: &str,
) -> Vec<String> {
    let mut a = args(&[
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-breakpad",
        "--disable-domain-reliability",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=5000",
    ]);
    a.push(format!("--user-data-dir={}", profile.display()));
    if let Via::Proxy(p) = via {
        a.push(format!("--proxy-server=http://{p}"));
        a.push("--proxy-bypass-list=<-loopback>".into());
    }
    if let Some(spki) = spki {
        a.push(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    a.extend(args(action));
    a.push(url.to_string());
    a
}

/// Runs Chromium once; returns its standard output (the DOM for `--dump-dom`) and the
/// process's wall time.
async fn chromium(
    name: &str,
    work: &Path,
    via: Via,
    spki: Option<&str>,
    action: &[&str],
    url: &str,
) -> (String, Duration) {
    let profile = tempfile::tempdir_in(work).expect("profile dir");
    let a = chromium_args(profile.path(), via, spki, action, url);
    let out = run_tool(name, CHROMIUM, &a, work, CHROMIUM_TIMEOUT).await;
    out.assert_ok(name);
    (out.stdout, out.elapsed)
}

fn assert_rendered(dom: &str, what: &str) {
    assert!(
        dom.contains(SITE_RENDERED),
        "{what}: the page did not render completely (want {SITE_RENDERED:?}); DOM:\n{}",
        tail(dom, 4000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_renders_a_site_through_a_crowd_of_five() {
    require_tool(CHROMIUM, "--version");
    let work = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(work.path());
    let origin = WebOrigin::start(Some(&ca)).await;
    let bench_origin = WebOrigin::start(None).await;
    // Exits allow only the origins' ports: whatever else the browser might try
    // leaves no exit.
    let ports = format!(
        "{},{},{}",
        origin.http.port(),
        origin.https.expect("TLS").port(),
        bench_origin.http.port()
    );
    let t = Instant::now();
    let crowd = Crowd::builder(KIT, N)
        .jondo_args(&["--exit-ports", &ports])
        .start()
        .await;
    eprintln!("crowd of {N} formed in {:?}", t.elapsed());
    let members: Vec<IpAddr> = crowd.member_ips();
    let initiator = &crowd.jondos[0];

    // The jondo's PAC file names its proxy.
    let (status, pac) = direct_get(initiator.control, "/proxy.pac")
        .await
        .expect("GET /proxy.pac");
    assert_eq!(status, StatusCode::OK);
    let pac = String::from_utf8_lossy(&pac).into_owned();
    assert!(
        pac.contains("FindProxyForURL") && pac.contains(&format!("PROXY {}", initiator.proxy)),
        "the PAC file does not name the proxy {}: {pac}",
        initiator.proxy
    );
    let via = Via::Proxy(initiator.proxy);

    // Plain HTTP, with the timing defence.
    let t = Instant::now();
    let bundles_before = counter(initiator.control, "served_from_bundles").await;
    let (dom, took) = chromium(
        "chromium-http",
        work.path(),
        via,
        None,
        &["--dump-dom"],
        &origin.url("/site/"),
    )
    .await;
    assert_rendered(&dom, "HTTP");
    let hits = origin.hits();
    for h in &hits {
        assert!(!h.tls);
        assert_member(&crowd, h.ip, &format!("{} {}", h.method, h.path));
    }
    let page = origin.hits_for("/site/");
    assert_eq!(page.len(), 1, "page requests: {hits:?}");
    let exit = page[0].ip;
    for obj in SITE_OBJECTS {
        let seen = origin.hits_for(obj);
        assert_eq!(
            seen.len(),
            1,
            "{obj} should reach the origin exactly once (fetched by the exit with the \
             page, the browser's own request answered at the initiator): {hits:?}"
        );
        assert_eq!(
            seen[0].ip, exit,
            "{obj} was not fetched by the page's exit {exit}: {hits:?}"
        );
    }
    let served = counter(initiator.control, "served_from_bundles").await - bundles_before;
    assert!(
        served >= SITE_OBJECTS.len() as u64,
        "the initiator answered only {served} of the browser's {} object requests from page \
         bundles: the timing defence did not work (origin saw {hits:?})",
        SITE_OBJECTS.len()
    );
    eprintln!(
        "STEP chromium over HTTP: {:?} (chromium {took:?}; exit {exit}; {served} objects \
         served from bundles; {} origin requests)",
        t.elapsed(),
        hits.len()
    );

    // A screenshot of the same page: a real PNG of the window's size, not a blank page.
    let t = Instant::now();
    let shot = work.path().join("page.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(
        "chromium-screenshot",
        work.path(),
        via,
        None,
        &[&shot_arg, "--window-size=800,600"],
        &origin.url("/site/"),
    )
    .await;
    let png = std::fs::read(&shot).expect("the screenshot file");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000,
        "the screenshot is not a non-trivial PNG ({} bytes)",
        png.len()
    );
    assert_eq!(
        (&png[16..20], &png[20..24]),
        (&800u32.to_be_bytes()[..], &600u32.to_be_bytes()[..]),
        "screenshot size"
    );
    eprintln!(
        "STEP chromium screenshot: {:?} ({} bytes)",
        t.elapsed(),
        png.len()
    );

    // HTTPS: CONNECT tunnels through the crowd, TLS end to end with the test CA's key.
    let t = Instant::now();
    let seen_before = origin.hits().len();
    let bundles_before = counter(initiator.control, "served_from_bundles").await;
    let (dom, took) = chromium(
        "chromium-https",
        work.path(),
        via,
        Some(&ca.spki_sha256),
        &["--dump-dom"],
        &origin.https_url("/site/"),
    )
    .await;
    assert_rendered(&dom, "HTTPS");
    let hits: Vec<Hit> = origin.hits().split_off(seen_before);
    for want in std::iter::once("/site/").chain(SITE_OBJECTS) {
        assert!(
            hits.iter().any(|h| h.path == want && h.tls),
            "{want} never reached the origin over TLS: {hits:?}"
        );
    }
    for h in &hits {
        assert!(h.tls, "a plain request during the HTTPS run: {h:?}");
        assert_member(&crowd, h.ip, &format!("HTTPS {} {}", h.method, h.path));
    }
    assert_eq!(
        counter(initiator.control, "served_from_bundles").await,
        bundles_before,
        "jondos cannot read HTTPS pages, so nothing can come from a bundle"
    );
    eprintln!(
        "STEP chromium over HTTPS: {:?} (chromium {took:?}; {} origin requests from {:?})",
        t.elapsed(),
        hits.len(),
        hits.iter()
            .map(|h| h.ip)
            .collect::<std::collections::BTreeSet<_>>()
    );

    // Page-load time: the whole Chromium process, for the same page, through the crowd
    // and direct, alternating.
    let t = Instant::now();
    let runs = if full_mode() { 5 } else { 2 };
    let (mut crowd_times, mut direct_times) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let (dom, took) = chromium(
            &format!("bench-crowd-{r}"),
            work.path(),
            via,
            None,
            &["--dump-dom"],
            &bench_origin.url("/site/"),
        )
        .await;
        assert_rendered(&dom, "bench through the crowd");
        crowd_times.push(took);
        let (dom, took) = chromium(
            &format!("bench-direct-{r}"),
            work.path(),
            Via::Direct,
            None,
            &["--dump-dom"],
            &bench_origin.url("/site/"),
        )
        .await;
        assert_rendered(&dom, "bench direct");
        direct_times.push(took);
    }
    crowd_times.sort();
    direct_times.sort();
    eprintln!(
        "MEASURE chromium page load (whole process, {runs} runs each): through the crowd \
         min {:?} median {:?}; direct min {:?} median {:?}",
        crowd_times[0],
        crowd_times[runs / 2],
        direct_times[0],
        direct_times[runs / 2]
    );
    eprintln!("STEP chromium timing runs: {:?}", t.elapsed());
    let direct_ips: Vec<IpAddr> = bench_origin.hits().iter().map(|h| h.ip).collect();
    assert!(
        direct_ips
            .iter()
            .any(|ip| ip.is_loopback() && !members.contains(ip)),
        "the direct runs should have reached the origin from 127.0.0.1: {direct_ips:?}"
    );
}
