//! The blender's join request: JSON from anyone who completes a TLS handshake.
//!
//! Checks that parsing never panics, that an accepted request has a usable peer
//! address, and that its `Debug` form never shows the password.
#![no_main]

use crowds_proto::api::{parse_join, MAX_API_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_join(data) {
        Ok(join) => {
            assert!(data.len() <= MAX_API_BODY);
            assert!(!join.peer_addr.ip().is_unspecified() && join.peer_addr.port() != 0);
            let debug = format!("{join:?}");
            if join.password.len() >= 4 {
                assert!(!debug.contains(&join.password), "password in Debug");
            }
        }
        Err(_) => {}
    }
});
