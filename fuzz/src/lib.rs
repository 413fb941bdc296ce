//! Helpers shared by the fuzz targets in `fuzz_targets/` and the seed generator in
//! `examples/gen_seeds.rs`: a fixed blender key, sample documents, and the header
//! hygiene invariants both HTTP targets check.

use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::headers::{
    sanitize_request, sanitize_response, Hygiene, ACCEPT_ANY, ACCEPT_IMAGE, ACCEPT_JSON,
    ACCEPT_PAGE, ACCEPT_STYLE, CROWD_ACCEPT_LANGUAGE, CROWD_USER_AGENT, ENCODINGS_BROWSER,
    ENCODINGS_GZIP,
};
use crowds_proto::identity::{PublicKey, SecretKey};
use http::header::{self, HeaderMap, HeaderName};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Seed of the fixed Ed25519 blender key the `crowd_document` target pins.
pub const BLENDER_SEED: [u8; 32] = [0x42; 32];

/// Domain-separation prefix of document signatures (private in `crowds_proto::document`;
/// [`blender`] checks at start-up that it still matches the crate).
pub const SIGNATURE_CONTEXT: &[u8] = b"crowds crowd document v1\0";

/// An Ed25519 PKCS#8 v1 document holding `seed` (RFC 8410 `OneAsymmetricKey`).
fn pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// The fixed blender key pair (deterministic, so seeds signed by the generator verify).
pub fn blender() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SecretKey::from_pkcs8(&pkcs8_v1(&BLENDER_SEED)).expect("fixed blender key");
        // The harness re-creates the envelope by hand; make sure it still matches the
        // crate's own encoding, or the signed mode of `crowd_document` would silently
        // only ever reach BadSignature.
        let doc = sample_document(1, 3, 1_000);
        let by_crate = doc.sign(&key).expect("sample signs");
        let body = postcard_body(&by_crate).expect("sample envelope decodes");
        assert_eq!(
            seal(&key, body),
            by_crate,
            "fuzz harness envelope encoding out of date"
        );
        key
    })
}

/// The public half of [`blender`].
pub fn blender_public() -> PublicKey {
    blender().public()
}

/// A valid document: `n` members with ids 1..=n, issued at `issued`, valid 10 minutes.
pub fn sample_document(epoch: u64, n: u64, issued: u64) -> CrowdDocument {
    CrowdDocument {
        crowd: "default".into(),
        epoch,
        forward_probability: 0.75,
        issued_at: issued,
        expires_at: issued + 600_000,
        members: (1..=n)
            .map(|id| Member {
                id,
                addr: SocketAddr::from(([127, 0, 0, id as u8], 7000 + id as u16)),
                key: PublicKey([id as u8; 32]),
                flags: if id % 4 == 0 { 1 } else { 0 },
            })
            .collect(),
    }
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: usize = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// Wraps arbitrary `body` bytes into a document envelope signed by `key`, exactly as
/// `CrowdDocument::sign` would for a body it encoded itself.
pub fn seal(key: &SecretKey, body: &[u8]) -> Vec<u8> {
    let mut msg = SIGNATURE_CONTEXT.to_vec();
    msg.extend_from_slice(body);
    let sig = key.sign(&msg);
    let mut out = crowds_proto::document::MAGIC.to_vec();
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    varint(sig.len(), &mut out);
    out.extend_from_slice(&sig);
    out
}

/// The body bytes of an encoded document (the inverse of [`seal`], signature ignored).
pub fn postcard_body(encoded: &[u8]) -> Option<&[u8]> {
    let rest = encoded.strip_prefix(&crowds_proto::document::MAGIC[..])?;
    let (len, rest) = read_varint(rest)?;
    rest.get(..len)
}

/// Request headers that must never survive `sanitize_request`.
pub fn is_identifying_request_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "referer",
        "from",
        "via",
        "forwarded",
        "host",
        "x-real-ip",
        "client-ip",
        "true-client-ip",
        "x-client-ip",
        "x-originating-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "expect",
        "dnt",
        "sec-gpc",
    ];
    EXACT.contains(&name)
        || is_hop_by_hop(name)
        || ["x-forwarded-", "proxy-", "crowds-"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Hop-by-hop headers, removed from requests and responses alike.
pub fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .contains(&name)
}

/// The header names a `Connection` header lists (as `sanitize_*` interprets them).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Runs `sanitize_request` with `rules` on a copy of `before` and checks the hygiene
/// invariants; returns the sanitised headers.
pub fn check_sanitize_request(before: &HeaderMap, rules: Hygiene) -> HeaderMap {
    let mut after = before.clone();
    sanitize_request(&mut after, rules);
    for name in after.keys() {
        assert!(
            !is_identifying_request_header(name.as_str()),
            "sanitize_request left {name:?}"
        );
    }
    let listed = connection_listed(before);
    for name in &listed {
        if name != header::USER_AGENT {
            assert!(
                !after.contains_key(name),
                "sanitize_request left Connection-listed {name:?}"
            );
        }
    }
    let agents: Vec<_> = after.get_all(header::USER_AGENT).iter().collect();
    assert_eq!(agents.len(), 1, "user-agent count after sanitize_request");
    assert_eq!(agents[0], CROWD_USER_AGENT);
    let languages: Vec<_> = after.get_all(header::ACCEPT_LANGUAGE).iter().collect();
    if before.contains_key(header::ACCEPT_LANGUAGE) && !listed.contains(&header::ACCEPT_LANGUAGE) {
        assert_eq!(
            languages,
            [CROWD_ACCEPT_LANGUAGE],
            "accept-language not normalised"
        );
    } else {
        assert!(languages.is_empty(), "accept-language added");
    }
    if rules.strip_cookies {
        for name in [
            header::COOKIE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
            header::AUTHORIZATION,
        ] {
            assert!(
                !after.contains_key(&name),
                "{name} kept with cookie stripping"
            );
        }
    }
    let accepts: Vec<_> = after.get_all(header::ACCEPT).iter().collect();
    assert!(accepts.len() <= 1, "several accept headers left");
    for a in accepts {
        assert!(
            [
                ACCEPT_PAGE,
                ACCEPT_IMAGE,
                ACCEPT_STYLE,
                ACCEPT_JSON,
                ACCEPT_ANY
            ]
            .contains(&a.to_str().unwrap_or("")),
            "accept not normalised: {a:?}"
        );
    }
    for e in after.get_all(header::ACCEPT_ENCODING) {
        assert!(
            [ENCODINGS_BROWSER, ENCODINGS_GZIP].contains(&e.to_str().unwrap_or("")),
            "accept-encoding not normalised: {e:?}"
        );
    }
    // Everything that was not removed or normalised is untouched (same values, order).
    for name in after.keys() {
        if name != header::USER_AGENT
            && name != header::ACCEPT_LANGUAGE
            && name != header::ACCEPT
            && name != header::ACCEPT_ENCODING
        {
            assert!(
                before.get_all(name).iter().eq(after.get_all(name).iter()),
                "sanitize_request changed the values of {name:?}"
            );
        }
    }
    // Idempotent, and the exit's safety net changes nothing the initiator already did.
    for again_rules in [rules, Hygiene::SAFETY_NET] {
        let mut again = after.clone();
        sanitize_request(&mut again, again_rules);
        assert_eq!(
            again, after,
            "a second sanitize_request ({again_rules:?}) changed it"
        );
    }
    after
}

/// Runs `sanitize_response` with `rules` on a copy of `before` and checks its invariants.
pub fn check_sanitize_response(before: &HeaderMap, rules: Hygiene) -> HeaderMap {
    let mut after = before.clone();
    sanitize_response(&mut after, rules);
    for name in after.keys() {
        let n = name.as_str();
        assert!(
            !is_hop_by_hop(n) && !n.starts_with("crowds-") && !n.starts_with("proxy-"),
            "sanitize_response left {name:?}"
        );
    }
    for name in connection_listed(before) {
        assert!(
            !after.contains_key(&name),
            "sanitize_response left Connection-listed {name:?}"
        );
    }
    if rules.strip_cookies {
        assert!(!after.contains_key(header::SET_COOKIE), "set-cookie kept");
    }
    for name in after.keys() {
        assert!(
            before.get_all(name).iter().eq(after.get_all(name).iter()),
            "sanitize_response changed the values of {name:?}"
        );
    }
    let mut again = after.clone();
    sanitize_response(&mut again, rules);
    assert_eq!(again, after, "sanitize_response is not idempotent");
    after
}

/// Both hygiene settings the nodes use: the initiator's default and the exit's.
pub const HYGIENES: [Hygiene; 2] = [
    Hygiene {
        strip_cookies: true,
    },
    Hygiene::SAFETY_NET,
];
