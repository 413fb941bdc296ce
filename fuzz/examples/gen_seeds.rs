//! Writes the checked-in seed corpus, `corpus/<target>/<descriptive-name>`.
//!
//! Run from `fuzz/`: `cargo +nightly run --example gen_seeds`. The output is
//! deterministic (the blender key is fixed and Ed25519 signatures are deterministic), so
//! re-running it reproduces the checked-in files byte for byte.

use crowds_fuzz::{blender, postcard_body, sample_document};
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::identity::{PublicKey, SecretKey};
use std::fs;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn signed(doc: &CrowdDocument) -> Vec<u8> {
    doc.sign(blender()).expect("sign")
}

fn body(doc: &CrowdDocument) -> Vec<u8> {
    // Encoded without `check()`, so invalid documents can be seeded too.
    postcard::to_stdvec(doc).expect("encode")
}

/// A `crowd_document` script: `now`, then (u16 LE length, body, u32 LE seconds step)*.
fn script(now: u64, steps: &[(&[u8], u32)]) -> Vec<u8> {
    let mut out = now.to_le_bytes().to_vec();
    for (body, step) in steps {
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&step.to_le_bytes());
    }
    out
}

fn crowd_document() {
    let t = "crowd_document";
    let d1 = sample_document(1, 3, 1_000);
    let d2 = sample_document(2, 8, 61_000);
    write(t, "signed-epoch1-3-members", &signed(&d1));
    write(t, "signed-epoch2-8-members-with-client-only", &signed(&d2));
    write(
        t,
        "signed-no-members",
        &signed(&sample_document(7, 0, 5_000)),
    );
    let mut other_crowd = sample_document(1, 2, 1_000);
    other_crowd.crowd = "other".into();
    other_crowd.members[1].addr = SocketAddr::from((Ipv6Addr::LOCALHOST, 7443));
    write(t, "signed-other-crowd-ipv6-member", &signed(&other_crowd));
    let rogue = SecretKey::from_pkcs8(
        &[
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ][..],
            &[0x13; 32][..],
        ]
        .concat(),
    )
    .expect("rogue key");
    write(
        t,
        "invalid-forged-signature",
        &d1.sign(&rogue).expect("sign"),
    );
    let full = signed(&d1);
    write(t, "invalid-truncated", &full[..full.len() - 10]);
    write(t, "invalid-trailing-byte", &[&full[..], &[0]].concat());
    let mut bad_magic = full.clone();
    bad_magic[5] = b'2';
    write(t, "invalid-magic-crowd2", &bad_magic);

    // Harness-signed scripts (input does not start with CROWD1).
    let b1 = postcard_body(&full).expect("body").to_vec();
    let b2 = body(&d2);
    let mut refresh = d2.clone();
    refresh.issued_at += 30_000;
    refresh.expires_at += 30_000;
    write(
        t,
        "script-join-refresh-stale",
        &script(
            1_000,
            &[(&b1, 60), (&b2, 30), (&body(&refresh), 1), (&b1, 0)],
        ),
    );
    let mut left = sample_document(3, 2, 70_000);
    left.members[0].addr = SocketAddr::from(([127, 0, 0, 9], 9000));
    write(
        t,
        "script-members-leave-and-change",
        &script(61_000, &[(&b2, 10), (&body(&left), 0)]),
    );
    let mut same_epoch_new_member = d2.clone();
    same_epoch_new_member.members.push(Member {
        id: 99,
        addr: SocketAddr::from(([127, 0, 0, 99], 7099)),
        key: PublicKey([99; 32]),
        flags: 0,
    });
    write(
        t,
        "script-inconsistent-same-epoch",
        &script(61_000, &[(&b2, 0), (&body(&same_epoch_new_member), 0)]),
    );
    write(
        t,
        "script-expired-then-future",
        &script(
            10_000_000,
            &[(&b1, 0), (&body(&sample_document(9, 1, 900_000_000)), 0)],
        ),
    );
    let mut unsorted = sample_document(4, 3, 1_000);
    unsorted.members.swap(0, 2);
    let mut dup_key = sample_document(4, 3, 1_000);
    dup_key.members[2].key = dup_key.members[0].key;
    let mut bad_pf = sample_document(4, 3, 1_000);
    bad_pf.forward_probability = f64::NAN;
    let mut long_name = sample_document(4, 1, 1_000);
    long_name.crowd = "x".repeat(65);
    let mut backwards = sample_document(4, 1, 1_000);
    backwards.expires_at = 1_000;
    write(
        t,
        "script-structurally-invalid-bodies",
        &script(
            1_000,
            &[
                (&body(&unsorted), 0),
                (&body(&dup_key), 0),
                (&body(&bad_pf), 0),
                (&body(&long_name), 0),
            ],
        ),
    );
    write(
        t,
        "script-expires-before-issued-and-trailing",
        &script(
            1_000,
            &[(&body(&backwards), 0), (&[&b1[..], &[7]].concat(), 0)],
        ),
    );
}

fn socks() {
    let t = "socks";
    let domain = [&[5, 1, 0, 3, 11][..], b"example.org", &[1, 187]].concat();
    let mut v6 = vec![5, 1, 0, 4];
    v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    v6.extend_from_slice(&[0x1f, 0x90]);
    write(t, "greeting-no-auth", &[5, 1, 0]);
    write(t, "greeting-gssapi-userpass-no-auth", &[5, 3, 1, 2, 0]);
    write(t, "greeting-userpass-only", &[5, 1, 2]);
    write(
        t,
        "greeting-then-connect-domain",
        &[&[5, 1, 0][..], &domain].concat(),
    );
    write(t, "connect-domain-example-org-443", &domain);
    write(
        t,
        "connect-ipv4-127-0-0-1-80",
        &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80],
    );
    write(t, "connect-ipv6-loopback-8080", &v6);
    write(
        t,
        "connect-domain-port-0",
        &[&domain[..domain.len() - 2], &[0, 0]].concat(),
    );
    write(
        t,
        "connect-domain-with-early-data",
        &[&domain[..], b"GET / HTTP/1.1\r\n"].concat(),
    );
    write(t, "invalid-bind-command", &[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]);
    write(
        t,
        "invalid-address-type-9",
        &[5, 1, 0, 9, 1, 2, 3, 4, 0, 80],
    );
    write(
        t,
        "invalid-domain-with-slash",
        &[5, 1, 0, 3, 3, b'a', b'/', b'b', 0, 80],
    );
    write(t, "invalid-truncated-domain", &domain[..9]);
    write(t, "invalid-socks4-connect", &[4, 1, 0, 80, 127, 0, 0, 1, 0]);
    write(t, "invalid-http-get", b"GET / HTTP/1.1\r\n\r\n");
}

fn relay_target() {
    let t = "relay_target";
    write(
        t,
        "uri-absolute-http-query",
        b"http://example.org/index.html?q=1&r=2",
    );
    write(t, "uri-absolute-http-ipv6-port", b"http://[::1]:8080/");
    write(t, "uri-connect-authority", b"example.org:443");
    write(t, "uri-connect-ipv6", b"[2001:db8::1]:8443");
    write(t, "uri-invalid-userinfo", b"http://user:pass@example.org/");
    write(t, "uri-invalid-https-absolute", b"https://example.org/");
    write(t, "uri-invalid-origin-form", b"/index.html");
    write(t, "uri-invalid-connect-port-0", b"example.org:0");
    write(t, "path-id-hex", b"00000000000000ff");
    write(t, "path-id-local", b"0000000000000000");
    write(
        t,
        "headers-browser-with-identifying",
        b"Host: example.org\r\n\
          User-Agent: Mozilla/5.0 (Secret OS)\r\n\
          Accept: text/html\r\n\
          Referer: http://secret.example/\r\n\
          From: me@example.org\r\n\
          Via: 1.1 myproxy\r\n\
          Forwarded: for=10.0.0.1\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\
          X-Real-IP: 10.0.0.1\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Connection: keep-alive\r\n\
          Connection: close, X-Private\r\n\
          X-Private: 1\r\n\
          DNT: 1\r\n\
          Sec-GPC: 1\r\n\
          Expect: 100-continue\r\n\
          Accept-Language: de-CH,de;q=0.9\r\n\
          Cookie: a=b\r\n",
    );
    write(
        t,
        "headers-relayed-with-path-id",
        b"crowds-path: 00000000000000ff\r\naccept: */*\r\nuser-agent: x\r\n",
    );
    write(
        t,
        "headers-two-path-ids",
        b"crowds-path: 0000000000000001\r\ncrowds-path: 0000000000000002\r\n",
    );
    write(
        t,
        "headers-response-hop-by-hop",
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive, Set-Cookie\r\n\
          Keep-Alive: timeout=5\r\nCrowds-Error: path-broken\r\nContent-Type: text/html\r\n\
          Set-Cookie: a=b\r\nTE: trailers\r\nUpgrade: h2c\r\n",
    );
}

fn http_request_head() {
    let t = "http_request_head";
    write(
        t,
        "firefox-get-absolute-form",
        b"GET http://example.org/index.html?q=1 HTTP/1.1\r\n\
          Host: example.org\r\n\
          User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0\r\n\
          Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
          Accept-Language: en-US,en;q=0.5\r\n\
          Accept-Encoding: gzip, deflate\r\n\
          Referer: http://example.org/\r\n\
          Connection: keep-alive\r\n\
          Proxy-Connection: keep-alive\r\n\
          Upgrade-Insecure-Requests: 1\r\n\
          DNT: 1\r\n\
          Sec-GPC: 1\r\n\
          Cookie: session=abc\r\n\r\n",
    );
    write(
        t,
        "connect-https-tunnel",
        b"CONNECT example.org:443 HTTP/1.1\r\n\
          Host: example.org:443\r\n\
          User-Agent: curl/8.5.0\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Connection: Keep-Alive\r\n\r\n",
    );
    write(
        t,
        "post-with-forwarding-headers",
        b"POST http://[::1]:8080/form HTTP/1.1\r\n\
          Host: [::1]:8080\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 3\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\
          X-Forwarded-Proto: http\r\n\
          Forwarded: for=10.0.0.1\r\n\
          Via: 1.1 corp-proxy\r\n\
          From: me@example.org\r\n\
          crowds-path: 00000000000000ff\r\n\
          Connection: X-Secret, close, Accept-Language\r\n\
          Accept-Language: fr\r\n\
          Expect: 100-continue\r\n\
          X-Secret: 1\r\n\r\na=b",
    );
    write(
        t,
        "origin-form-get-not-a-proxy-request",
        b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
    );
    write(
        t,
        "invalid-userinfo-in-target",
        b"GET http://user:pass@example.org/ HTTP/1.0\r\n\r\n",
    );
    write(
        t,
        "invalid-truncated-head",
        b"GET http://example.org/ HTTP/1.1\r\nHost: exa",
    );
}

fn path_table() {
    let t = "path_table";
    let seed = *b"crowds!!";
    // Opcodes: 0-3 route(pred, id, pf index, members), 4 forget(pred, id),
    // 5 forget_from(member), 6 forget_all, 7 coin (or flood to MAX_PATHS with 0xf0+).
    let script = |ops: &[&[u8]]| [&seed[..], &ops.concat()].concat();
    write(
        t,
        "initiator-and-relays-route-and-forget",
        &script(&[
            &[0, 0, 1, 2, 0x0f],
            &[1, 1, 1, 2, 0x0f],
            &[2, 2, 3, 3, 0xff],
            &[0, 1, 1, 2, 0x0f],
            &[4, 1, 1],
            &[5, 2],
            &[0, 1, 1, 2, 0x0f],
            &[6],
            &[0, 0, 1, 2, 0x0f],
        ]),
    );
    write(
        t,
        "successor-leaves-member-list",
        &script(&[
            &[0, 0, 5, 2, 0x01],
            &[0, 0, 5, 2, 0x02],
            &[0, 0, 5, 2, 0x03],
            &[1, 3, 5, 6, 0x00],
            &[1, 3, 5, 0, 0x00],
        ]),
    );
    write(
        t,
        "relay-pf-zero-and-one",
        &script(&[
            &[1, 4, 9, 0, 0x55],
            &[1, 4, 9, 6, 0x55],
            &[1, 5, 9, 6, 0xaa],
            &[1, 5, 9, 0, 0xaa],
            &[7, 2, 0x07, 1],
            &[7, 8, 0x00, 0],
        ]),
    );
    write(
        t,
        "duplicate-and-huge-member-ids",
        &script(&[&[0, 0, 0, 2, 0xfe], &[1, 7, 15, 2, 0xff], &[5, 7], &[5, 0]]),
    );
    write(
        t,
        "flood-to-max-paths",
        &script(&[
            &[7, 0xff, 0x0f],
            &[1, 1, 1, 2, 0x0f],
            &[0, 0, 1, 2, 0x0f],
            &[6],
            &[1, 1, 1, 2, 0x0f],
        ]),
    );
}

/// `document_delta`: real deltas from the target's base (epoch 3, members 1..=5) and
/// document bodies for the sign-then-delta mode.
fn document_delta() {
    let base = sample_document(3, 5, 1_000);
    for (name, next) in [
        ("delta-one-joins", sample_document(4, 6, 2_000)),
        ("delta-two-leave", sample_document(4, 3, 2_000)),
        ("delta-refresh", sample_document(3, 5, 301_000)),
    ] {
        let delta = crowds_proto::delta::DocumentDelta::encode_between(&base, &signed(&next))
            .expect("delta");
        write("document_delta", name, &delta);
        write("document_delta", &format!("body-{name}"), &body(&next));
    }
    write(
        "document_delta",
        "magic-only",
        crowds_proto::delta::DELTA_MAGIC,
    );
}

fn main() {
    // Tolerate running from the repository root as well.
    if Path::new("fuzz/Cargo.toml").exists() {
        std::env::set_current_dir("fuzz").expect("cd fuzz");
    }
    crowd_document();
    // Self-check: the signed-* seeds verify under the pinned key, the invalid-* do not.
    for entry in fs::read_dir("corpus/crowd_document").expect("corpus dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        let ok = CrowdDocument::verify(&fs::read(&path).expect("read"), &blender().public());
        if name.starts_with("signed-") {
            assert!(ok.is_ok(), "{name}: {ok:?}");
        } else if name.starts_with("invalid-") {
            assert!(ok.is_err(), "{name} verifies");
        }
    }
    socks();
    relay_target();
    http_request_head();
    path_table();
    document_delta();
    println!("seed corpus written to fuzz/corpus/");
}
