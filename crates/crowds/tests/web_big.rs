//! The whole web through the crowd (issue 3): big and long transfers. A download and
//! an upload through a path of at least three distinct jondos arrive byte-exact (SHA-256)
//! while every jondo's peak resident memory stays under 64 MiB; then 200 concurrent
//! downloads from one initiator all arrive exactly.
//!
//! CI sizes: 256 MiB down, 64 MiB up. `CROWDS_FULL=1` runs the full sizes (1 GiB down,
//! 256 MiB up). Throughput and memory are printed (run with `--nocapture`).

use crowds_testkit::web;

use crowds_testkit::*;
use hyper::StatusCode;
use std::time::{Duration, Instant};
use web::*;

const MIB: u64 = 1024 * 1024;
/// Ceiling on every jondo's peak RSS (VmHWM) during the big transfers.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn hwm_mib(crowd: &Crowd) -> Vec<f64> {
    crowd
        .jondos
        .iter()
        .map(|j| {
            j.proc
                .pid()
                .and_then(vm_hwm_kib)
                .map(|k| k as f64 / 1024.0)
                .unwrap_or(f64::NAN)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_transfers_and_many_downloads() {
    require_tool(CURL, "--version");
    let (down, up) = if full_mode() {
        (1024 * MIB, 256 * MIB)
    } else {
        (256 * MIB, 64 * MIB)
    };
    let t = Instant::now();
    let mut crowd = Crowd::start(KIT, 5).await;
    eprintln!("crowd of 5 formed in {:?}", t.elapsed());
    let origin = WebOrigin::start(None).await;
    let work = tempfile::tempdir().expect("tempdir");

    // A path through at least three distinct jondos (re-formed if no initiator has one).
    let path = long_path(&mut crowd, &origin, 3, 3).await;
    let initiator = &crowd.jondos[path.initiator];
    eprintln!(
        "path of jondo{}: relays {:?}, exit {} ({} distinct jondos of {})",
        path.initiator,
        path.relays,
        path.exit,
        path.distinct_jondos(&crowd),
        crowd.jondos.len()
    );
    eprintln!("peak RSS before (MiB): {:.1?}", hwm_mib(&crowd));

    // Download, hashed as it streams (curl piped to sha256sum).
    let url = origin.url(&format!("/blob/{down}"));
    let script = format!(
        "set -o pipefail; curl -q --silent --show-error --max-time 600 -x http://{} \
         -w '%{{stderr}}%{{http_code}} %{{size_download}}' '{url}' | sha256sum",
        initiator.proxy
    );
    let t = Instant::now();
    let out = run_tool(
        "download",
        "bash",
        &args(&["-c", &script]),
        work.path(),
        Duration::from_secs(660),
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    out.assert_ok("the big download");
    assert_eq!(
        out.stderr.trim(),
        format!("200 {down}"),
        "status and length of the big download"
    );
    assert_eq!(
        out.stdout.split_whitespace().next(),
        Some(expected_sha(down).as_str()),
        "the big download's SHA-256"
    );
    let hits = origin.hits_for(&format!("/blob/{down}"));
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].ip, path.exit,
        "the download left through another exit"
    );
    let hwm = hwm_mib(&crowd);
    eprintln!(
        "MEASURE download {} MiB in {secs:.2} s: {:.1} MiB/s; peak RSS per jondo (MiB): {hwm:.1?}",
        down / MIB,
        down as f64 / MIB as f64 / secs
    );

    // For scale: the same download straight from the origin, no crowd.
    let script = format!(
        "set -o pipefail; curl -q --silent --show-error --max-time 600 '{url}' | sha256sum"
    );
    let t = Instant::now();
    let out = run_tool(
        "download-direct",
        "bash",
        &args(&["-c", &script]),
        work.path(),
        Duration::from_secs(660),
    )
    .await;
    let direct_secs = t.elapsed().as_secs_f64();
    out.assert_ok("the direct download");
    assert_eq!(
        out.stdout.split_whitespace().next(),
        Some(expected_sha(down).as_str())
    );
    eprintln!(
        "MEASURE direct download (no crowd) {} MiB in {direct_secs:.2} s: {:.1} MiB/s",
        down / MIB,
        down as f64 / MIB as f64 / direct_secs
    );

    // Upload (curl -T streams the file, with Content-Length).
    let file = work.path().join("upload.bin");
    write_pattern_file(&file, up).await;
    let mut a = curl_base(600);
    a.extend(args(&[
        "-x",
        &format!("http://{}", initiator.proxy),
        "-T",
        &file.to_string_lossy(),
        &origin.url("/upload?big"),
    ]));
    let t = Instant::now();
    let out = run_tool("upload", CURL, &a, work.path(), Duration::from_secs(660)).await;
    let secs = t.elapsed().as_secs_f64();
    out.assert_ok("the big upload");
    assert_eq!(
        out.stdout.trim(),
        format!("{} {up}", expected_sha(up)),
        "the origin's hash of the big upload"
    );
    let _ = std::fs::remove_file(&file);
    let hwm = hwm_mib(&crowd);
    eprintln!(
        "MEASURE upload {} MiB in {secs:.2} s: {:.1} MiB/s; peak RSS per jondo (MiB): {hwm:.1?}",
        up / MIB,
        up as f64 / MIB as f64 / secs
    );
    for (j, mib) in crowd.jondos.iter().zip(&hwm) {
        assert!(
            *mib * 1024.0 < RSS_LIMIT_KIB as f64,
            "{} peaked at {mib:.1} MiB resident during the big transfers (limit {} MiB)",
            j.account,
            RSS_LIMIT_KIB / 1024
        );
    }

    // 200 concurrent downloads of 256 KiB (+ k bytes) from one initiator.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..200u64 {
        let proxy = initiator.proxy;
        let len = 256 * 1024 + k;
        let url = origin.url(&format!("/blob/{len}?many={k}"));
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::connect(proxy)
                .await
                .map_err(|e| format!("{k}: {e}"))?;
            let (status, _, body) = client
                .get(&url, &[])
                .await
                .map_err(|e| format!("{k}: {e}"))?;
            Ok::<_, String>((k, len, status, body))
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.expect("download task") {
            Ok((k, len, status, body)) => {
                if status != StatusCode::OK {
                    failures.push(format!("{k}: status {status}"));
                } else if body.len() as u64 != len
                    || hex(&sha2::Sha256::digest(&body)) != expected_sha(len)
                {
                    failures.push(format!("{k}: {} bytes, not the expected {len}", body.len()));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 concurrent downloads failed: {failures:?}",
        failures.len()
    );
    eprintln!(
        "MEASURE 200 concurrent downloads of 256 KiB in {:?}; peak RSS per jondo (MiB): {:.1?}",
        t.elapsed(),
        hwm_mib(&crowd)
    );
    for j in &mut crowd.jondos {
        j.proc.assert_running();
    }
}

use sha2::Digest;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));
