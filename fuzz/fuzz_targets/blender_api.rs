//! The blender's join request: JSON from anyone who completes a TLS handshake.
//!
//! Checks that parsing never panics, that an accepted request has a usable peer
//! address, an account name the blender may use as a throttle key and a password of a
//! size it checks, and that its `Debug` form does not depend on the password.
#![no_main]

use crowds_proto::api::{parse_join, valid_name, MAX_API_BODY, MAX_PASSWORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_join(data) {
        Ok(join) => {
            assert!(data.len() <= MAX_API_BODY);
            assert!(!join.peer_addr.ip().is_unspecified() && join.peer_addr.port() != 0);
            assert!(valid_name(&join.account));
            assert!(!join.password.is_empty() && join.password.len() <= MAX_PASSWORD);
            // The Debug form must not depend on the password at all. (Checking that the
            // password is absent from it is wrong: "0000" may be part of the account
            // name or the address; regressions/blender_api-password-in-name.)
            let debug = format!("{join:?}");
            let mut other = join;
            other.password = format!("{}x", other.password);
            assert_eq!(debug, format!("{other:?}"), "Debug shows the password");
        }
        Err(_) => {}
    }
});
