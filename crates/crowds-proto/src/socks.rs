//! SOCKS5 (RFC 1928) messages, parsed and encoded without I/O.
//!
//! Owns the greeting (method negotiation), the request (command and destination) and
//! the reply. Only the "no authentication" method and the CONNECT command are offered;
//! domain names are kept as names so they are resolved at the exit, never locally.
//! SOCKS4 and 4a are refused with a distinct error: they invite local DNS resolution.
//! Parsers take a byte slice and return `Ok(None)` when more bytes are needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The SOCKS version byte.
pub const VERSION: u8 = 5;
/// "No authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// "No acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
/// The CONNECT command.
pub const CMD_CONNECT: u8 = 0x01;
/// Longest greeting: version, count, 255 methods.
pub const MAX_GREETING: usize = 257;
/// Longest request: header, a 255-byte name, the port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;

/// Reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General SOCKS server failure.
    GeneralFailure = 0x01,
    /// Connection not allowed by ruleset (the exit policy).
    NotAllowed = 0x02,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable.
    HostUnreachable = 0x04,
    /// Connection refused.
    ConnectionRefused = 0x05,
    /// TTL expired (used for timeouts).
    TtlExpired = 0x06,
    /// Command not supported.
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

/// What is wrong with a client's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// A SOCKS4/4a client: refused, since SOCKS4 resolves names locally.
    #[error("SOCKS4 is not supported (it resolves names locally); use SOCKS5 with remote DNS")]
    Socks4,
    /// Not SOCKS at all, or a wrong version byte.
    #[error("not a SOCKS5 message (version byte {0:#04x})")]
    BadVersion(u8),
    /// A greeting listing no methods.
    #[error("SOCKS5 greeting lists no methods")]
    NoMethods,
    /// A reserved byte that is not zero, or an empty domain name.
    #[error("malformed SOCKS5 request")]
    Malformed,
    /// A command other than CONNECT (the reply code says which error to send).
    #[error("SOCKS5 command {0:#04x} is not supported")]
    UnsupportedCommand(u8),
    /// An unknown address type.
    #[error("SOCKS5 address type {0:#04x} is not supported")]
    UnsupportedAddressType(u8),
}

impl SocksError {
    /// The reply to send before closing, if the protocol has one for this error.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            SocksError::UnsupportedCommand(_) => Some(Reply::CommandNotSupported),
            SocksError::UnsupportedAddressType(_) => Some(Reply::AddressTypeNotSupported),
            SocksError::Malformed => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

/// The destination of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An IP literal.
    Addr(SocketAddr),
    /// A name, to be resolved at the exit.
    Domain(String, u16),
}

impl Destination {
    /// `host:port` with IPv6 literals bracketed, as a CONNECT authority.
    pub fn authority(&self) -> String {
        match self {
            Destination::Addr(SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
            Destination::Addr(a) => a.to_string(),
            Destination::Domain(name, port) => format!("{name}:{port}"),
        }
    }
}

/// Parses the greeting; returns the method to choose and the bytes consumed.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(u8, usize)>, SocksError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    match version {
        VERSION => {}
        4 => return Err(SocksError::Socks4),
        v => return Err(SocksError::BadVersion(v)),
    }
    let Some(&count) = buf.get(1) else {
        return Ok(None);
    };
    if count == 0 {
        return Err(SocksError::NoMethods);
    }
    let end = 2 + count as usize;
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    let method = if methods.contains(&METHOD_NO_AUTH) {
        METHOD_NO_AUTH
    } else {
        METHOD_NONE_ACCEPTABLE
    };
    Ok(Some((method, end)))
}

/// Parses a request; returns the CONNECT destination and the bytes consumed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Destination, usize)>, SocksError> {
    if buf.len() < 4 {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(SocksError::BadVersion(v));
            }
        }
        return Ok(None);
    }
    let (version, command, reserved, atyp) = (buf[0], buf[1], buf[2], buf[3]);
    if version != VERSION {
        return Err(SocksError::BadVersion(version));
    }
    if reserved != 0 {
        return Err(SocksError::Malformed);
    }
    let (host, at): (Option<Destination>, usize) = match atyp {
        1 => {
            let Some(b) = buf.get(4..8) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            (
                Some(Destination::Addr(SocketAddr::new(IpAddr::V4(ip), 0))),
                8,
            )
        }
        4 => {
            let Some(b) = buf.get(4..20) else {
                return Ok(None);
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(b);
            let ip = Ipv6Addr::from(octets);
            (
                Some(Destination::Addr(SocketAddr::new(IpAddr::V6(ip), 0))),
                20,
            )
        }
        3 => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            let Some(name) = buf.get(5..5 + len as usize) else {
                return Ok(None);
            };
            if len == 0
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b))
            {
                return Err(SocksError::Malformed);
            }
            let name = String::from_utf8_lossy(name).into_owned();
            (Some(Destination::Domain(name, 0)), 5 + len as usize)
        }
        other => return Err(SocksError::UnsupportedAddressType(other)),
    };
    let Some(p) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    if command != CMD_CONNECT {
        return Err(SocksError::UnsupportedCommand(command));
    }
    let port = u16::from_be_bytes([p[0], p[1]]);
    let dest = match host {
        Some(Destination::Addr(a)) => Destination::Addr(SocketAddr::new(a.ip(), port)),
        Some(Destination::Domain(n, _)) => Destination::Domain(n, port),
        None => return Err(SocksError::Malformed),
    };
    Ok(Some((dest, at + 2)))
}

/// Encodes a reply (the bound address is always reported as 0.0.0.0:0: it is not ours).
pub fn encode_reply(reply: Reply) -> [u8; 10] {
    [VERSION, reply as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting() {
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 2, 0]), Ok(Some((0, 4))));
        assert_eq!(parse_greeting(&[5, 1, 2]), Ok(Some((0xff, 3))));
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
        assert_eq!(parse_greeting(&[4, 1, 0, 80]), Err(SocksError::Socks4));
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1"),
            Err(SocksError::BadVersion(b'G'))
        );
    }

    #[test]
    fn requests() {
        let domain = [&[5, 1, 0, 3, 11][..], b"example.org", &[1, 187]].concat();
        assert_eq!(
            parse_request(&domain),
            Ok(Some((
                Destination::Domain("example.org".into(), 443),
                domain.len()
            )))
        );
        for cut in 0..domain.len() {
            assert_eq!(parse_request(&domain[..cut]), Ok(None), "cut {cut}");
        }
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
        let (d, n) = parse_request(&v4).expect("ok").expect("complete");
        assert_eq!((d.authority(), n), ("127.0.0.1:80".to_string(), 10));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        let (d, _) = parse_request(&v6).expect("ok").expect("complete");
        assert_eq!(d.authority(), "[::1]:8080");
        assert_eq!(
            parse_request(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
            Err(SocksError::UnsupportedCommand(2))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]),
            Err(SocksError::UnsupportedAddressType(9))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 3, b'a', b'/', b'b', 0, 80]),
            Err(SocksError::Malformed)
        );
        assert_eq!(
            SocksError::UnsupportedCommand(3).reply(),
            Some(Reply::CommandNotSupported)
        );
        assert_eq!(encode_reply(Reply::Succeeded)[1], 0);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = parse_greeting(&bytes) {
                prop_assert!(n <= bytes.len());
            }
            if let Ok(Some((d, n))) = parse_request(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!(!d.authority().is_empty());
            }
        }

        #[test]
        fn domain_round_trip(name in "[a-z0-9.-]{1,60}", port in 1u16..) {
            let mut msg = vec![5, 1, 0, 3, name.len() as u8];
            msg.extend_from_slice(name.as_bytes());
            msg.extend_from_slice(&port.to_be_bytes());
            prop_assert_eq!(parse_request(&msg), Ok(Some((Destination::Domain(name, port), msg.len()))));
        }
    }
}
