//! Header hygiene: what leaves the user's jondo, and what comes back from the server.
//!
//! Owns the list of identifying and hop-by-hop headers. The initiator's jondo applies
//! [`sanitize_request`] before a request enters the crowd, so no jondo on the path sees
//! what the server must not see, and the request has the same form on every hop; the
//! exit applies it again as a safety net. [`sanitize_response`] strips hop-by-hop
//! headers (and anything pretending to be a crowd control header) from server replies.
//!
//! Removed from requests: hop-by-hop headers (Connection and every header it names,
//! Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, Expect (answered
//! by the local proxy), Host — the target travels in the request URI), every `Proxy-*`
//! header, `Referer`, `From`, `Via`, `Forwarded`, every `X-Forwarded-*` header,
//! `X-Real-IP`, `Client-IP`, `True-Client-IP`, `X-Client-IP`, `X-Originating-IP`,
//! `X-Cluster-Client-IP`, `CF-Connecting-IP`, `DNT` and `Sec-GPC` (a minority sends them,
//! so they split the crowd into smaller sets; uniformity protects more than the request
//! they make), and any `crowds-*` header a client tries to inject.
//!
//! Normalised: `User-Agent` becomes [`CROWD_USER_AGENT`] and `Accept-Language` becomes
//! [`CROWD_ACCEPT_LANGUAGE`], one value each for every member.
//!
//! Cookies ([`Hygiene::strip_cookies`], on by default): on plain HTTP every jondo on the
//! path can read them, and they link a user's requests, so the initiator removes `Cookie`
//! from requests and `Set-Cookie` from responses. Tunnels (HTTPS) are never touched. The
//! exit's safety net applies everything except the cookie rule, which is the user's
//! choice and cannot be signalled to the exit without making requests linkable.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The User-Agent every request leaves the crowd with: a common browser's, so crowd
/// members look like each other and like many non-members.
pub const CROWD_USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The Accept-Language every request leaves the crowd with.
pub const CROWD_ACCEPT_LANGUAGE: &str = "en-US,en;q=0.5";

/// Which optional rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hygiene {
    /// Remove `Cookie` from requests and `Set-Cookie` from responses (plain HTTP).
    pub strip_cookies: bool,
}

impl Default for Hygiene {
    fn default() -> Self {
        Self {
            strip_cookies: true,
        }
    }
}

impl Hygiene {
    /// The exit's safety net: the mandatory rules only.
    pub const SAFETY_NET: Hygiene = Hygiene {
        strip_cookies: false,
    };
}

/// Headers removed from every request and response because they concern one hop only.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that identify the user or the proxies a request went through.
const IDENTIFYING: &[&str] = &[
    "host",
    // The local proxy answers `Expect: 100-continue` itself; it is not forwarded.
    "expect",
    "referer",
    "from",
    "via",
    "forwarded",
    "x-real-ip",
    "client-ip",
    "true-client-ip",
    "x-client-ip",
    "x-originating-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "dnt",
    "sec-gpc",
];

/// Prefixes of request headers removed whatever follows.
const IDENTIFYING_PREFIXES: &[&str] = &["proxy-", "x-forwarded-", "crowds-"];

fn remove_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn remove_prefixed(headers: &mut HeaderMap, prefixes: &[&str]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| prefixes.iter().any(|p| k.as_str().starts_with(p)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Makes a request's headers fit to enter the crowd.
pub fn sanitize_request(headers: &mut HeaderMap, rules: Hygiene) {
    remove_connection_listed(headers);
    for name in IDENTIFYING {
        headers.remove(*name);
    }
    remove_prefixed(headers, IDENTIFYING_PREFIXES);
    if rules.strip_cookies {
        headers.remove(header::COOKIE);
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(CROWD_USER_AGENT),
    );
    if headers.contains_key(header::ACCEPT_LANGUAGE) {
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static(CROWD_ACCEPT_LANGUAGE),
        );
    }
}

/// Makes a server's response headers fit to travel back along the path (or, with
/// cookie stripping, to reach the user's browser).
pub fn sanitize_response(headers: &mut HeaderMap, rules: Hygiene) {
    remove_connection_listed(headers);
    remove_prefixed(headers, &["crowds-", "proxy-"]);
    if rules.strip_cookies {
        headers.remove(header::SET_COOKIE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn identifying_headers_are_removed() {
        let mut h = map(&[
            ("Referer", "http://secret.example/"),
            ("From", "me@example.org"),
            ("Via", "1.1 myproxy"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Host", "inner"),
            ("Forwarded", "for=10.0.0.1"),
            ("X-Real-IP", "10.0.0.1"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Crowds-Path", "0000000000000001"),
            ("User-Agent", "MyBrowser/1.0 (Secret OS)"),
            ("Connection", "close, X-Private"),
            ("X-Private", "1"),
            ("Host", "example.org"),
            ("DNT", "1"),
            ("Sec-GPC", "1"),
            ("Accept", "text/html"),
            ("Accept-Language", "de-CH,de;q=0.9,rm;q=0.8"),
            ("Cookie", "session=abc"),
        ]);
        let mut kept = h.clone();
        sanitize_request(&mut h, Hygiene::default());
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "accept-language", "user-agent"]);
        assert_eq!(h["accept"], "text/html");
        assert_eq!(h["user-agent"], CROWD_USER_AGENT);
        assert_eq!(h["accept-language"], CROWD_ACCEPT_LANGUAGE);
        sanitize_request(&mut kept, Hygiene::SAFETY_NET);
        assert_eq!(kept["cookie"], "session=abc");
    }

    #[test]
    fn response_hop_by_hop_removed() {
        let mut h = map(&[
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Crowds-Error", "path-broken"),
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=b"),
        ]);
        let mut stripped = h.clone();
        sanitize_response(&mut stripped, Hygiene::default());
        assert!(!stripped.contains_key("set-cookie"));
        sanitize_response(&mut h, Hygiene::SAFETY_NET);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "set-cookie"]);
    }

    proptest! {
        #[test]
        fn sanitized_requests_never_carry_identifying_headers(
            names in proptest::collection::vec("[a-zA-Z-]{1,20}", 0..20),
            value in "[ -~]{0,40}",
        ) {
            let mut h = HeaderMap::new();
            for n in &names {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(&value)) {
                    h.append(k, v);
                }
            }
            sanitize_request(&mut h, Hygiene::default());
            for k in h.keys() {
                let k = k.as_str();
                prop_assert!(!IDENTIFYING.contains(&k) && !HOP_BY_HOP.contains(&k));
                prop_assert!(!IDENTIFYING_PREFIXES.iter().any(|p| k.starts_with(p)));
            }
            prop_assert_eq!(h.get_all("user-agent").iter().count(), 1);
        }
    }
}
