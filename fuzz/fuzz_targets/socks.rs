//! SOCKS5 parsing: `parse_greeting` and `parse_request` on untrusted client bytes.
//!
//! Checks that a complete message never claims more bytes than it was given, that
//! `Ok(None)` ("need more") is only answered while a longer input could still complete
//! the message, and that the CONNECT authority built from a parsed request is a valid
//! `http::Uri` that `relay::connect_target` reads back as the same host and port: the
//! SOCKS front end sends exactly that authority as an HTTP CONNECT to the local proxy.
#![no_main]

use crowds_proto::relay::{connect_target, TargetError};
use crowds_proto::socks::{parse_greeting, parse_request, Destination, METHOD_NO_AUTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    greeting(data);
    request(data);
    // The local SOCKS server parses the request from what follows the greeting.
    if let Ok(Some((_, n))) = parse_greeting(data) {
        request(&data[n..]);
    }
});

fn greeting(data: &[u8]) {
    match parse_greeting(data) {
        Ok(Some((method, n))) => {
            assert!(
                n <= data.len(),
                "greeting consumed {n} of {} bytes",
                data.len()
            );
            assert!(n >= 3);
            let methods = &data[2..n];
            assert_eq!(method == METHOD_NO_AUTH, methods.contains(&METHOD_NO_AUTH));
            // A prefix of a complete greeting is incomplete, never an error.
            for cut in 0..n {
                assert_eq!(parse_greeting(&data[..cut]), Ok(None), "cut {cut}");
            }
            // Bytes after the greeting do not change it.
            assert_eq!(parse_greeting(&data[..n]), Ok(Some((method, n))));
        }
        Ok(None) => assert!(data.len() < crowds_proto::socks::MAX_GREETING),
        Err(_) => {}
    }
}

fn request(data: &[u8]) {
    match parse_request(data) {
        Ok(Some((dest, n))) => {
            assert!(
                n <= data.len(),
                "request consumed {n} of {} bytes",
                data.len()
            );
            assert!(n <= crowds_proto::socks::MAX_REQUEST);
            assert_eq!(parse_request(&data[..n]), Ok(Some((dest.clone(), n))));
            check_authority(&dest);
        }
        Ok(None) => assert!(data.len() < crowds_proto::socks::MAX_REQUEST),
        Err(_) => {}
    }
}

fn check_authority(dest: &Destination) {
    let authority = dest.authority();
    let uri: http::Uri = match authority.parse() {
        Ok(uri) => uri,
        Err(e) => {
            panic!("SOCKS destination {dest:?} gives authority {authority:?}, not a URI: {e}")
        }
    };
    // socks.rs sends it as the Host header too.
    assert!(http::HeaderValue::from_str(&authority).is_ok());
    let (host, port) = match dest {
        Destination::Addr(a) => (a.ip().to_string(), a.port()),
        Destination::Domain(name, port) => (name.clone(), *port),
    };
    match connect_target(&uri) {
        Ok(t) => assert_eq!((t.host, t.port), (host, port), "authority {authority:?}"),
        Err(TargetError::NotAuthority) if port == 0 => {}
        Err(e) => panic!("authority {authority:?} of {dest:?} refused by connect_target: {e}"),
    }
}
