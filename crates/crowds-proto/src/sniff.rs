//! What the first bytes a client sends into a tunnel are: plaintext HTTP or not.
//!
//! A browser in SOCKS mode, or any client told to tunnel through the HTTP proxy, sends
//! `http://` requests through a byte tunnel. Those requests would cross the crowd raw,
//! with the user's Cookie, Referer and User-Agent readable by every jondo on the path and
//! without the timing defence. The initiator reads the opening bytes with [`opening`]
//! and gives such requests the same treatment as proxied ones. Pure: no I/O.

/// Most bytes needed to decide.
pub const SNIFF_BYTES: usize = 24;
/// Longest method name recognised (the longest registered ones are shorter).
const MAX_METHOD: usize = 16;

/// What a tunnel's opening bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// An HTTP/1 request line (`METHOD /target` or `METHOD http://...`).
    Http1,
    /// The HTTP/2 cleartext preface (`PRI * HTTP/2.0`): plaintext HTTP the jondo does not
    /// speak inside tunnels; refused.
    Http2,
    /// Anything else (a TLS ClientHello, SSH, ...): a real tunnel.
    Other,
    /// Not enough bytes yet.
    NeedMore,
}

/// Classifies the first bytes a client sent into a tunnel. Leading empty lines (which
/// HTTP/1 servers must ignore) are skipped.
pub fn opening(prefix: &[u8]) -> Opening {
    let start = prefix
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(prefix.len());
    if start > 4 {
        // More blank lines than any client sends first: not worth looking further.
        return Opening::Other;
    }
    let line = &prefix[start..];
    if line.starts_with(b"PRI * HTTP/2.0") {
        return Opening::Http2;
    }
    if b"PRI * HTTP/2.0".starts_with(line) && !line.is_empty() {
        return Opening::NeedMore;
    }
    let method = line.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD {
        return Opening::Other;
    }
    match line.get(method) {
        None => Opening::NeedMore,
        Some(b' ') if method >= 3 => match line.get(method + 1) {
            None => Opening::NeedMore,
            Some(b'/') | Some(b'*') => Opening::Http1,
            Some(_) => {
                let target = &line[method + 1..];
                let scheme = b"http://";
                let n = target.len().min(scheme.len());
                if !target[..n].eq_ignore_ascii_case(&scheme[..n]) {
                    Opening::Other
                } else if n < scheme.len() {
                    Opening::NeedMore
                } else {
                    Opening::Http1
                }
            }
        },
        Some(_) => Opening::Other,
    }
}

/// Whether a tunnel's opening bytes start a TLS handshake record (a ClientHello).
pub fn is_tls(prefix: &[u8]) -> bool {
    matches!(prefix, [0x16, 0x03, minor, ..] if *minor <= 0x04)
}

/// The plaintext TLS alert record an initiator sends a TLS client whose tunnel it had
/// already answered with success (optimistic data) when the crowd then reports `kind`:
/// the client gets a fatal handshake error at once instead of a connection that is
/// closed without a word. A refusal by the exit policy is `access_denied` (49), any other
/// failure `internal_error` (80) (RFC 8446 section 6).
pub fn tls_alert(kind: crate::relay::ErrorKind) -> [u8; 7] {
    const FATAL: u8 = 2;
    let description = match kind {
        crate::relay::ErrorKind::ExitPolicy => 49,
        _ => 80,
    };
    // Record type alert (21), legacy version TLS 1.2, length 2, then level and description.
    [21, 0x03, 0x03, 0x00, 0x02, FATAL, description]
}

/// HTTP token characters (RFC 9110), as found in method names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_requests_are_recognised_byte_by_byte() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /form HTTP/1.1\r\n",
            b"\r\nHEAD /x HTTP/1.0\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"GET http://a.example/ HTTP/1.1\r\n",
            b"get HTTP://a.example/ HTTP/1.1\r\n",
        ] {
            for cut in 0..req.len().min(SNIFF_BYTES) {
                let got = opening(&req[..cut]);
                assert!(
                    got == Opening::NeedMore || got == Opening::Http1,
                    "{:?} cut at {cut}: {got:?}",
                    String::from_utf8_lossy(req)
                );
            }
            assert_eq!(opening(&req[..req.len().min(SNIFF_BYTES)]), Opening::Http1);
        }
    }

    #[test]
    fn tls_openings_and_alerts() {
        assert!(is_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_tls(&[0x16, 0x03]), "too short to tell");
        assert!(!is_tls(b"SSH-2.0-OpenSSH_9.2\r\n"));
        assert!(!is_tls(&[0x16, 0x03, 0x09]));
        let policy = tls_alert(crate::relay::ErrorKind::ExitPolicy);
        assert_eq!(policy, [21, 3, 3, 0, 2, 2, 49]);
        for kind in crate::relay::ErrorKind::ALL {
            let alert = tls_alert(kind);
            assert_eq!(
                alert[..6],
                [21, 3, 3, 0, 2, 2],
                "{kind:?}: a fatal alert record"
            );
        }
        assert_eq!(tls_alert(crate::relay::ErrorKind::OriginUnreachable)[6], 80);
    }

    #[test]
    fn other_protocols_are_tunnels() {
        assert_eq!(opening(&[0x16, 0x03, 0x01, 0x02, 0x00]), Opening::Other);
        assert_eq!(opening(b"SSH-2.0-OpenSSH_9.2\r\n"), Opening::Other);
        assert_eq!(opening(b"GET relative HTTP/1.1"), Opening::Other);
        assert_eq!(opening(b"GE / HTTP/1.1"), Opening::Other);
        assert_eq!(
            opening(b"AVERYLONGMETHODNAMEXYZ / HTTP/1.1"),
            Opening::Other
        );
        assert_eq!(opening(b"\r\n\r\n\r\n\r\nGET / HTTP/1.1"), Opening::Other);
        assert_eq!(opening(b"GET https://a/ HTTP/1.1"), Opening::Other);
    }

    #[test]
    fn cleartext_http2_is_told_apart() {
        assert_eq!(opening(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Opening::Http2);
        assert_eq!(opening(b"PRI * HT"), Opening::NeedMore);
    }

    proptest! {
        #[test]
        fn a_decision_never_needs_more_than_sniff_bytes(bytes in proptest::collection::vec(any::<u8>(), SNIFF_BYTES..64)) {
            prop_assert_ne!(opening(&bytes), Opening::NeedMore);
        }

        #[test]
        fn more_bytes_never_change_a_decision(bytes in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..64) {
            let cut = cut.min(bytes.len());
            let early = opening(&bytes[..cut]);
            if early != Opening::NeedMore {
                prop_assert_eq!(opening(&bytes), early);
            }
        }
    }
}
