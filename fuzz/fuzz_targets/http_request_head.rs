//! A request head as the local HTTP proxy receives it.
//!
//! hyper parses the head in production (fuzzing hyper is out of scope); here `httparse`
//! (the parser hyper's HTTP/1 server uses) stands in for it. A head that parses into a
//! method, a target and headers becomes an `http::Request` (invalid parts skipped), and
//! then gets what `crowds_jondo::proxy` does to it: `relay::request_target` on its method
//! and URI, and `headers::sanitize_request`, with its hygiene invariants asserted.
#![no_main]

use crowds_fuzz::{check_sanitize_request, HYGIENES};
use crowds_proto::relay::{request_target, PATH_HEADER};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(len)) = head.parse(data) else {
        return;
    };
    assert!(len <= data.len());
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = Uri::try_from(path) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(uri);
    for h in head.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let Ok(req) = builder.body(()) else {
        return;
    };

    let target = request_target(req.method(), req.uri());
    if let Ok(t) = &target {
        assert!(!t.host.is_empty());
        if req.method() == Method::CONNECT {
            assert_ne!(t.port, 0);
        } else {
            assert_eq!(req.uri().scheme_str(), Some("http"));
        }
    }
    let (parts, ()) = req.into_parts();
    for rules in HYGIENES {
        let sanitized = check_sanitize_request(&parts.headers, rules);
        // Nothing the client sent can pose as the link's path id.
        assert!(!sanitized.contains_key(PATH_HEADER));
    }
});
