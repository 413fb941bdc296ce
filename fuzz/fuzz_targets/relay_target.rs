//! Request targets, path ids and header hygiene on untrusted text.
//!
//! The input is read as text (lossy UTF-8) and used three ways: as a request URI for
//! `http_target`, `connect_target` and `request_target` (GET and CONNECT); as a
//! `crowds-path` value for `PathId::from_hex`; and, split into lines of `name: value`,
//! as a header map for `relay::path_id`, `headers::sanitize_request` and
//! `headers::sanitize_response`, whose hygiene invariants are asserted.
#![no_main]

use crowds_fuzz::{check_sanitize_request, check_sanitize_response, HYGIENES};
use crowds_proto::path::PathId;
use crowds_proto::relay::{
    connect_target, http_target, path_id, request_target, TargetError, MAX_URI_LEN, PATH_HEADER,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    targets(&text);
    if let Some(rest) = text.strip_prefix(' ') {
        targets(rest.trim_end_matches(['\r', '\n']));
    }
    path_ids(&text);

    let headers = header_map(data);
    if let Ok(id) = path_id(&headers) {
        let values: Vec<_> = headers.get_all(PATH_HEADER).iter().collect();
        assert_eq!(values.len(), 1);
        assert_ne!(id, PathId::LOCAL);
        assert_eq!(values[0].to_str().ok().and_then(PathId::from_hex), Some(id));
    }
    for rules in HYGIENES {
        let sanitized = check_sanitize_request(&headers, rules);
        assert_eq!(path_id(&sanitized), Err(TargetError::BadPathId));
        check_sanitize_response(&headers, rules);
    }
});

fn targets(text: &str) {
    let Ok(uri) = text.parse::<Uri>() else {
        return;
    };
    let http = http_target(&uri);
    let connect = connect_target(&uri);
    assert_eq!(request_target(&Method::GET, &uri), http);
    assert_eq!(request_target(&Method::POST, &uri), http);
    assert_eq!(request_target(&Method::CONNECT, &uri), connect);
    if let Ok(t) = &http {
        assert_eq!(uri.scheme_str(), Some("http"));
        assert!(!t.host.is_empty());
        assert!(!t.host.contains('@'));
        assert!(uri.to_string().len() <= MAX_URI_LEN);
        assert_eq!(Some(t.port), uri.port_u16().or(Some(80)));
    }
    if let Ok(t) = &connect {
        assert!(uri.scheme().is_none());
        assert!(!t.host.is_empty());
        assert!(!t.host.contains('@'));
        assert_ne!(t.port, 0);
        assert_eq!(Some(t.port), uri.port_u16());
    }
}

fn path_ids(text: &str) {
    for candidate in [text, text.trim()] {
        if let Some(id) = PathId::from_hex(candidate) {
            assert_eq!(id.to_hex(), candidate.to_ascii_lowercase());
            assert_eq!(PathId::from_hex(&id.to_hex()), Some(id));
        }
    }
}

/// `name: value` per line; lines that do not make a valid header are skipped.
fn header_map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}
