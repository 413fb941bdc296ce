//! Claims the crowd cannot keep, and how a jondo says so, on real processes: a crowd
//! whose pf is at most 1/2 is refused unless the user asked for it
//! (`--insecure-allow-low-pf`); a client-only member is told that its first hop knows
//! its requests start with it, and every anonymity figure (status page, `status.json`,
//! `/metrics`) counts forwarding members only; and the status page never promises
//! probable innocence for HTTPS.

use crowds_proto::analysis::CrowdModel;
use crowds_testkit::*;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// One jondo of a test crowd: its process and local ports.
struct Member {
    proc: Proc,
    peer: SocketAddr,
    proxy: SocketAddr,
    control: SocketAddr,
}

/// Starts `crowds jondo` number `i` (peer on 127.0.0.(71 + i)) with `extra` flags.
fn member(dir: &Path, i: usize, blender: SocketAddr, blender_pub: &Path, extra: &[&str]) -> Member {
    let account = format!("claims{i}");
    let pw = dir.join(format!("{account}.password"));
    write_file_mode(&pw, &format!("password of {account}\n"), 0o600);
    let ip = jondo_ip(60 + i);
    let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let (proxy, control) = (free_local_addr(), free_local_addr());
    let proc = KIT.spawn_jondo(&JondoSpec {
        name: &account,
        data_dir: &dir.join(&account),
        blender,
        blender_key: blender_pub,
        account: &account,
        password_file: &pw,
        peer,
        proxy,
        socks: free_local_addr(),
        control,
        allow_private: true,
        extra,
        log_dir: &dir.join("logs"),
    });
    Member {
        proc,
        peer,
        proxy,
        control,
    }
}

/// Creates the accounts of members `0..n` and starts a blender with `flags`.
async fn blender(dir: &Path, n: usize, flags: &[&str]) -> (Proc, SocketAddr, std::path::PathBuf) {
    let data = dir.join("blender");
    for i in 0..n {
        KIT.account_add(
            &data,
            &format!("claims{i}"),
            &format!("password of claims{i}"),
        );
    }
    KIT.start_blender(&data, &dir.join("logs"), flags).await
}

/// Waits until `m`'s status satisfies `ok`, and returns it.
async fn status_when(
    what: &str,
    m: &mut Member,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let control = m.control;
    m.proc.assert_running();
    eventually(what, FORM_TIMEOUT, || {
        let ok = &ok;
        async move {
            let s = status_of(control).await?;
            if ok(&s) {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        }
    })
    .await
}

/// A page of the control port as text.
async fn page(control: SocketAddr, path: &str) -> String {
    let (status, body) = direct_get(control, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}");
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of an unlabelled metric, if it is there.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The kinds of the warnings in a status.
fn warning_kinds(s: &serde_json::Value) -> Vec<String> {
    s["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array: {s}"))
        .iter()
        .map(|w| w["kind"].as_str().expect("kind").to_string())
        .collect()
}

/// No number in `text` follows a minus sign (a hyphen or an exponent's may), and no count is
/// infinite or not a number.
fn assert_no_impossible_count(text: &str) {
    let bytes = text.as_bytes();
    for i in 0..bytes.len().saturating_sub(1) {
        // After a letter it is a hyphen ("utf-8") or an exponent ("1e-5").
        let joined = i > 0 && bytes[i - 1].is_ascii_alphanumeric();
        assert!(
            !(bytes[i] == b'-' && bytes[i + 1].is_ascii_digit() && !joined),
            "a negative number at byte {i}: {text}"
        );
    }
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        assert!(
            !["inf", "NaN", "infinity"].contains(&word),
            "{word:?} in {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_with_pf_at_most_one_half_is_refused_unless_asked_for() {
    let dir = tempfile::Builder::new()
        .prefix("crowds-claims-")
        .tempdir()
        .expect("tempdir");
    // pf = 1/2 exactly: the boundary, where pf/(pf - 1/2) has no finite value.
    let (mut blender, addr, blender_pub) =
        blender(dir.path(), 2, &["--pf", "0.5", "--insecure-pf"]).await;
    let mut refusing = member(dir.path(), 0, addr, &blender_pub, &[]);
    let mut insecure = member(
        dir.path(),
        1,
        addr,
        &blender_pub,
        &["--insecure-allow-low-pf"],
    );

    // With the flag: the crowd is adopted, with both members listed (the refusing one
    // joined; it only refuses the document), and a warning instead of figures.
    let s = status_when(
        "the flagged jondo to adopt the pf 0.5 crowd",
        &mut insecure,
        |s| s["admitted"] == true && s["members"] == 2,
    )
    .await;
    assert_eq!(s["pf"], 0.5, "{s}");
    assert_eq!(s["insecure_allow_low_pf"], true, "{s}");
    assert!(s["refused_pf"].is_null(), "{s}");
    assert!(s["probable_innocence_against"].is_null(), "{s}");
    assert!(s["forwarding_members_needed"].is_null(), "{s}");
    let kinds = warning_kinds(&s);
    assert!(kinds.iter().any(|k| k == "low_pf_insecure"), "{s}");
    assert!(!kinds.iter().any(|k| k == "too_small"), "{s}");
    let html = page(insecure.control, "/").await;
    assert!(html.contains("id=\"warn-low_pf_insecure\""), "{html}");
    assert!(html.contains("no crowd size gives"), "{html}");
    assert_no_impossible_count(&html);
    assert_no_impossible_count(&s.to_string());
    let log = insecure.proc.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("using a crowd whose pf 0.5")),
        "no warning in the flagged jondo's log:\n{log}"
    );

    // Without it: the same document is refused, plainly, on the page and in the log.
    let s = status_when("the other jondo to refuse the crowd", &mut refusing, |s| {
        s["refused_pf"] == 0.5
    })
    .await;
    assert_eq!(s["admitted"], false, "{s}");
    assert_eq!(s["members"], 0, "no document may be in use: {s}");
    assert_eq!(s["insecure_allow_low_pf"], false, "{s}");
    assert_eq!(warning_kinds(&s), ["low_pf_refused"], "{s}");
    let html = page(refusing.control, "/").await;
    assert!(html.contains("id=\"warn-low_pf_refused\""), "{html}");
    assert!(html.contains("--insecure-allow-low-pf"), "{html}");
    assert!(
        !html.contains("waiting for the next epoch"),
        "a refusal is not a wait: {html}"
    );
    assert_no_impossible_count(&html);
    let metrics = page(refusing.control, "/metrics").await;
    assert_eq!(
        metric(&metrics, "crowds_document_refused_low_pf"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "crowds_admitted"), Some(0.0), "{metrics}");

    // Its user's requests are refused, not sent into the crowd; the flagged member's go
    // through (past the refusing member, whose links refuse everyone).
    let origin = Origin::start().await;
    let mut client = HttpClient::connect(refusing.proxy).await.expect("proxy");
    let (status, _, body) = client
        .get(&origin.url("/whoami?refused"), &[])
        .await
        .expect("an answer from the refusing jondo");
    assert_ne!(status, 200, "a refused crowd carried a request");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("pf too low") && text.contains("at most 1/2"),
        "the error page says why: {text}"
    );
    assert!(origin.seen_path("/whoami?refused").is_empty());
    let mut client = HttpClient::connect(insecure.proxy).await.expect("proxy");
    let (status, _, body) = client
        .get(&origin.url("/whoami?insecure"), &[])
        .await
        .expect("an answer from the flagged jondo");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        insecure.peer.ip().to_string(),
        "the refusing member may not be an exit"
    );

    // The refusal is logged once at error level, not at every poll: the request above
    // made the refusing jondo fetch the document again.
    refusing.proc.assert_running();
    let log = refusing.proc.stderr();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refusing the crowd document"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(refusals[0].contains("ERROR"), "{log}");
    assert!(refusals[0].contains("--insecure-allow-low-pf"), "{log}");
    blender.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_member_is_told_and_counted_out() {
    let dir = tempfile::Builder::new()
        .prefix("crowds-claims-")
        .tempdir()
        .expect("tempdir");
    let (mut blender, addr, blender_pub) = blender(dir.path(), 3, &["--pf", "0.75"]).await;
    let mut forwarding = member(dir.path(), 0, addr, &blender_pub, &[]);
    let mut other = member(dir.path(), 1, addr, &blender_pub, &[]);
    // Member 2 advertises a port where nothing listens: the blender's connect-back is
    // refused, and it joins client-only, as a member behind a firewall does.
    let ip = jondo_ip(62);
    let nowhere = SocketAddr::new(IpAddr::V4(ip), free_port(ip)).to_string();
    let mut client_only = member(
        dir.path(),
        2,
        addr,
        &blender_pub,
        &["--advertise", &nowhere],
    );
    let formed = |s: &serde_json::Value| s["admitted"] == true && s["members"] == 3;
    status_when("member 1 in the crowd of 3", &mut other, formed).await;
    let fs = status_when("member 0 in the crowd of 3", &mut forwarding, formed).await;
    let s = status_when(
        "the client-only member in the crowd of 3",
        &mut client_only,
        formed,
    )
    .await;

    // Three members, two forwarding. At pf = 3/4, three would keep probable innocence
    // against none (n >= 3) and two cannot: the figures say two.
    let two = CrowdModel::new(2, 1, 0.75).expect("model of 2");
    let three = CrowdModel::new(3, 1, 0.75).expect("model of 3");
    assert_ne!(two.initiator_observed(), three.initiator_observed());
    for (who, st, is_client_only) in [("client-only", &s, true), ("forwarding", &fs, false)] {
        assert_eq!(st["client_only"], is_client_only, "{who}: {st}");
        assert_eq!(st["forwarding_members"], 2, "{who}: {st}");
        assert!(st["probable_innocence_against"].is_null(), "{who}: {st}");
        assert_eq!(st["forwarding_members_needed"], 6, "{who}: {st}");
        let share = &st["predecessor_attack"]["at_assumed_share"];
        assert_eq!(share["collaborators"], 1, "{who}: {st}");
        assert_eq!(
            share["initiator_observed_per_reformation"].as_f64(),
            Some(two.initiator_observed()),
            "{who}: {st}"
        );
        let kinds = warning_kinds(st);
        assert_eq!(
            kinds.iter().any(|k| k == "client_only"),
            is_client_only,
            "{who}: {st}"
        );
        assert!(kinds.iter().any(|k| k == "too_small"), "{who}: {st}");
        assert_eq!(st["caveats"][0]["kind"], "https_timing", "{who}: {st}");
    }
    let warning = s["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["kind"] == "client_only")
        .expect("client-only warning");
    let text = warning["message"].as_str().expect("message");
    assert!(
        text.contains("The first jondo on your path therefore knows that every request it gets from you was started by you"),
        "{text}"
    );
    assert!(text.contains("2 forwarding members"), "{text}");
    let too_small = s["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["kind"] == "too_small")
        .expect("too small");
    assert!(
        too_small["message"]
            .as_str()
            .is_some_and(|t| t.contains("With 2 forwarding members")),
        "{too_small}"
    );

    // The page: the warning first, the forwarding count, the first hop's view of the
    // user instead of statistics, and HTTPS's limit.
    let html = page(client_only.control, "/").await;
    let warned = html
        .find("id=\"warn-client_only\"")
        .expect("warning on the page");
    let crowd = html.find("<h2>Crowd</h2>").expect("crowd section");
    assert!(warned < crowd, "the warning is not at the top: {html}");
    assert!(
        html.contains("<span class=\"big\" id=\"members\">3</span>"),
        "{html}"
    );
    assert!(
        html.contains("<b id=\"forwarding\">2</b> forwarding"),
        "{html}"
    );
    assert!(html.contains("id=\"first-hop\""), "{html}");
    assert!(
        html.contains("probability <b>0.50</b>"),
        "1 of 2 first hops: {html}"
    );
    assert!(html.contains("id=\"https\""), "{html}");
    assert!(
        html.contains("does not promise probable innocence for HTTPS"),
        "{html}"
    );
    assert_no_impossible_count(&html);
    let forwarding_html = page(forwarding.control, "/").await;
    assert!(
        !forwarding_html.contains("warn-client_only"),
        "{forwarding_html}"
    );
    assert!(
        forwarding_html.contains("id=\"https\""),
        "{forwarding_html}"
    );
    assert!(
        forwarding_html.contains("of this crowd's 2 forwarding members"),
        "{forwarding_html}"
    );

    // Metrics: the forwarding count, the flag, the figures of two.
    let metrics = page(client_only.control, "/metrics").await;
    assert_eq!(metric(&metrics, "crowds_members"), Some(3.0), "{metrics}");
    assert_eq!(
        metric(&metrics, "crowds_forwarding_members"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "crowds_client_only"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "crowds_attack_observed_per_reformation"),
        Some(two.initiator_observed()),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "crowds_probable_innocence_against"),
        None,
        "two forwarding members tolerate nobody: {metrics}"
    );
    let metrics = page(forwarding.control, "/metrics").await;
    assert_eq!(
        metric(&metrics, "crowds_client_only"),
        Some(0.0),
        "{metrics}"
    );

    // The start-up log says it at warn level.
    let log = client_only.proc.stderr();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("client-only member")
            && l.contains("the first jondo on its path knows")),
        "no client-only warning in the log:\n{log}"
    );
    assert!(
        !forwarding.proc.stderr().contains("client-only member"),
        "{}",
        forwarding.proc.stderr()
    );

    // It browses, and never through itself.
    let origin = Origin::start().await;
    let mut client = HttpClient::connect(client_only.proxy).await.expect("proxy");
    let (status, _, body) = client
        .get(&origin.url("/whoami"), &[])
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let exit = String::from_utf8_lossy(&body).trim().to_string();
    assert_ne!(exit, client_only.peer.ip().to_string());
    assert!(
        [forwarding.peer.ip(), other.peer.ip()]
            .iter()
            .any(|ip| ip.to_string() == exit),
        "exit {exit}"
    );
    blender.assert_running();
}
