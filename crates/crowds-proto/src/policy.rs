//! Which destination addresses an exit may submit to.
//!
//! Owns the classification of IP addresses as public or not. An exit resolves the
//! server's name itself and checks every resolved address here before connecting, so a
//! crowd cannot be used to reach loopback, private or link-local services behind a
//! member's firewall (the article's warning), and which destination ports it allows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Destination ports an exit allows by default: the web (80, 443) and its common
/// alternates (8080, 8443, 8000, 8008, 8888). Mail, SSH, databases and the rest are
/// refused, so a crowd cannot be used to spam or attack services in members' names.
pub const DEFAULT_EXIT_PORTS: &[u16] = &[80, 443, 8000, 8008, 8080, 8443, 8888];

/// Which destination ports an exit allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPolicy {
    /// Only these ports.
    Only(Vec<u16>),
    /// Every port (testing and the demo).
    Any,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy::Only(DEFAULT_EXIT_PORTS.to_vec())
    }
}

impl PortPolicy {
    /// Whether `port` may be used.
    pub fn allows(&self, port: u16) -> bool {
        port != 0
            && match self {
                PortPolicy::Only(ports) => ports.contains(&port),
                PortPolicy::Any => true,
            }
    }

    /// Parses `any` or a comma-separated list of ports.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "any" {
            return Ok(PortPolicy::Any);
        }
        let ports = text
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("not a port number: {p:?} (use e.g. 80,443 or any)"))
            })
            .collect::<Result<Vec<u16>, String>>()?;
        if ports.is_empty() {
            return Err("no ports given".into());
        }
        Ok(PortPolicy::Only(ports))
    }
}

/// Whether `ip` is a public unicast address an exit may connect to by default.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
        || s[0] == 0x0100) // discard prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = PortPolicy::default();
        assert!(p.allows(80) && p.allows(443) && !p.allows(25) && !p.allows(22));
        assert_eq!(PortPolicy::parse("any"), Ok(PortPolicy::Any));
        assert_eq!(
            PortPolicy::parse("80, 8080"),
            Ok(PortPolicy::Only(vec![80, 8080]))
        );
        assert!(PortPolicy::parse("80,x").is_err());
        assert!(PortPolicy::parse("0").is_err());
        assert!(!PortPolicy::Any.allows(0));
    }

    #[test]
    fn classification() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }
}

/// Whether a control port may answer a request carrying this `Host` header: absent, an
/// IP literal (with or without port), or `localhost`. Any other name means a browser
/// reached the port through a name that resolves to it, which is how DNS rebinding lets
/// a web page read a local service: such requests are refused. An IP literal is safe:
/// the browser connected to that very address, so the page's origin is the port itself.
pub fn control_host_allowed(host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || valid_port_suffix(tail) => {
                return v6.parse::<Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port_suffix(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
        || name.parse::<Ipv4Addr>().is_ok()
}

fn valid_port_suffix(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod control_host_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_addresses_and_localhost_reach_control_ports() {
        for ok in [
            None,
            Some(&b"127.0.0.1:8119"[..]),
            Some(b"127.0.0.1"),
            Some(b"localhost:8119"),
            Some(b"LOCALHOST"),
            Some(b"[::1]:8119"),
            Some(b"[::1]"),
            Some(b"192.0.2.7:9000"),
        ] {
            assert!(control_host_allowed(ok), "{ok:?}");
        }
        for bad in [
            &b"evil.example"[..],
            b"evil.example:8119",
            b"localhost.evil.example",
            b"127.0.0.1.nip.io:8119",
            b"[::1]x",
            b"127.0.0.1:80:80",
            b"127.0.0.1:",
            b"\xff",
            b"",
        ] {
            assert!(
                !control_host_allowed(Some(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn names_with_letters_other_than_localhost_are_refused(name in "[a-z][a-z0-9.-]{0,30}", port in proptest::option::of(0u16..)) {
            prop_assume!(!name.eq_ignore_ascii_case("localhost") && !name.eq_ignore_ascii_case("localhost."));
            let host = match port { Some(p) => format!("{name}:{p}"), None => name };
            prop_assert!(!control_host_allowed(Some(host.as_bytes())));
        }
    }
}
