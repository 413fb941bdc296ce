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
//! [`CROWD_ACCEPT_LANGUAGE`], one value each for every member. `Accept` becomes one
//! common value per kind of request ([`crowd_accept`]: page, image, stylesheet, JSON,
//! anything else) and `Accept-Encoding` one of three ([`crowd_accept_encoding`]: what
//! browsers send, gzip only, or none), never naming an encoding the client did not
//! accept. A browser's exact lists differ by make and version; left alone they would
//! sort the crowd's requests into small groups.
//!
//! Cookies and other state ([`Hygiene::strip_cookies`], on by default): on plain HTTP
//! every jondo on the path can read them, and they link a user's requests, so the
//! initiator removes `Cookie` from requests and `Set-Cookie` from responses. The same
//! rule removes the other headers that carry a value the server handed out or the
//! user's identity: `If-None-Match` (an ETag is a cookie when cookies are refused;
//! Privoxy's `crunch-if-none-match`), `If-Modified-Since` (a unique date works the
//! same way; Privoxy's `hide-if-modified-since`) and `Authorization` (a name and, with
//! Basic, a password readable by every jondo on the path), and `If-Range` (browsers send
//! it by themselves with media and resumed downloads, carrying the cached ETag; without
//! it the server simply sends the whole object). Turn cookie stripping off for a
//! plain-HTTP site that needs a login. `If-Match` and `If-Unmodified-Since` stay: they
//! are sent only with edits, which need them.
//!
//! `Origin`: kept when it is the request's own origin (it tells the server nothing
//! new), and `null`; removed when it names another site (it is then a Referer by
//! another name), see [`trim_origin`]. Cross-site CORS requests over plain HTTP then
//! fail, as they do for any client that hides where it came from.
//!
//! Tunnels (HTTPS) are never touched. The exit's safety net applies everything except
//! the cookie rule, which is the user's choice and cannot be signalled to the exit
//! without making requests linkable.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The User-Agent every request leaves the crowd with: a common browser's, so crowd
/// members look like each other and like many non-members.
pub const CROWD_USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The Accept-Language every request leaves the crowd with.
pub const CROWD_ACCEPT_LANGUAGE: &str = "en-US,en;q=0.5";

/// `Accept` of page requests (the browser of [`CROWD_USER_AGENT`] sends this).
pub const ACCEPT_PAGE: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// `Accept` of image requests.
pub const ACCEPT_IMAGE: &str =
    "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
/// `Accept` of stylesheet requests.
pub const ACCEPT_STYLE: &str = "text/css,*/*;q=0.1";
/// `Accept` of requests that ask for JSON (APIs; a browser's `fetch` sends `*/*`).
pub const ACCEPT_JSON: &str = "application/json";
/// `Accept` of every other request.
pub const ACCEPT_ANY: &str = "*/*";
/// `Accept-Encoding` of clients that take what browsers take.
pub const ENCODINGS_BROWSER: &str = "gzip, deflate, br";
/// `Accept-Encoding` of clients that take gzip but not all of the above.
pub const ENCODINGS_GZIP: &str = "gzip";

/// The common `Accept` for a request whose client sent `accept`.
pub fn crowd_accept(accept: &str) -> &'static str {
    let a = accept.to_ascii_lowercase();
    let first = a.trim_start();
    if a.contains("text/html") {
        ACCEPT_PAGE
    } else if first.starts_with("image/") {
        ACCEPT_IMAGE
    } else if first.starts_with("text/css") {
        ACCEPT_STYLE
    } else if first.starts_with("application/json") {
        ACCEPT_JSON
    } else {
        ACCEPT_ANY
    }
}

/// Whether an `Accept-Encoding` value accepts `coding` (listed, or `*`, without `q=0`).
fn accepts_coding(value: &str, coding: &str) -> bool {
    let mut wildcard = false;
    for item in value.split(',') {
        let mut params = item.split(';');
        let name = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = params.any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if name == coding {
            return !refused;
        }
        if name == "*" {
            wildcard = !refused;
        }
    }
    wildcard
}

/// The common `Accept-Encoding` for a client that sent `value`; `None`: send none
/// (identity), because the client takes neither common set.
pub fn crowd_accept_encoding(value: &str) -> Option<&'static str> {
    if ["gzip", "deflate", "br"]
        .iter()
        .all(|c| accepts_coding(value, c))
    {
        Some(ENCODINGS_BROWSER)
    } else if accepts_coding(value, "gzip") {
        Some(ENCODINGS_GZIP)
    } else {
        None
    }
}

/// Removes `Origin` unless it is `null` or the origin of `target` (see the module doc).
pub fn trim_origin(headers: &mut HeaderMap, target: &http::Uri) {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return;
    };
    let own = match (target.scheme_str(), target.host()) {
        (Some(scheme), Some(host)) => match target.port_u16() {
            Some(port) if Some(port) != default_port(scheme) => {
                format!("{scheme}://{host}:{port}")
            }
            _ => format!("{scheme}://{host}"),
        },
        _ => String::new(),
    };
    let keep = origin.as_bytes() == b"null"
        || (!own.is_empty() && origin.as_bytes().eq_ignore_ascii_case(own.as_bytes()));
    if !keep {
        headers.remove(header::ORIGIN);
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

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
        for name in [
            header::COOKIE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
            header::AUTHORIZATION,
        ] {
            headers.remove(name);
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT) {
        let common = crowd_accept(&String::from_utf8_lossy(accept.as_bytes()));
        headers.insert(header::ACCEPT, HeaderValue::from_static(common));
    }
    if let Some(encodings) = headers.get(header::ACCEPT_ENCODING) {
        match crowd_accept_encoding(&String::from_utf8_lossy(encodings.as_bytes())) {
            Some(common) => {
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(common));
            }
            None => {
                headers.remove(header::ACCEPT_ENCODING);
            }
        }
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
        assert_eq!(h["accept"], ACCEPT_PAGE);
        assert_eq!(h["user-agent"], CROWD_USER_AGENT);
        assert_eq!(h["accept-language"], CROWD_ACCEPT_LANGUAGE);
        sanitize_request(&mut kept, Hygiene::SAFETY_NET);
        assert_eq!(kept["cookie"], "session=abc");
    }

    #[test]
    fn state_headers_go_with_cookies() {
        let pairs = [
            ("If-None-Match", "\"tracking-id-123\""),
            ("If-Modified-Since", "Tue, 01 Dec 2026 17:41:03 GMT"),
            ("Authorization", "Basic dXNlcjpwYXNz"),
            ("If-Range", "\"v2\""),
        ];
        let mut h = map(&pairs);
        sanitize_request(&mut h, Hygiene::default());
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["user-agent"]);
        let mut kept = map(&pairs);
        sanitize_request(&mut kept, Hygiene::SAFETY_NET);
        assert_eq!(kept.len(), 5, "the safety net leaves them: {kept:?}");
    }

    #[test]
    fn accept_headers_fall_into_few_classes() {
        for (sent, common) in [
            ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7", ACCEPT_PAGE),
            ("text/html", ACCEPT_PAGE),
            ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", ACCEPT_IMAGE),
            ("text/css,*/*;q=0.1", ACCEPT_STYLE),
            ("application/json, text/plain, */*", ACCEPT_JSON),
            ("*/*", ACCEPT_ANY),
            ("application/x-secret-client-marker", ACCEPT_ANY),
        ] {
            assert_eq!(crowd_accept(sent), common, "{sent}");
            assert_eq!(crowd_accept(common), common, "{common} is stable");
        }
        for (sent, common) in [
            ("gzip, deflate, br, zstd", Some(ENCODINGS_BROWSER)),
            ("gzip, deflate, br", Some(ENCODINGS_BROWSER)),
            ("*", Some(ENCODINGS_BROWSER)),
            ("deflate, gzip", Some(ENCODINGS_GZIP)),
            ("gzip, deflate, br;q=0", Some(ENCODINGS_GZIP)),
            ("identity", None),
            ("br", None),
            ("gzip;q=0, *", None),
        ] {
            assert_eq!(crowd_accept_encoding(sent), common, "{sent}");
        }
        let mut h = map(&[("Accept-Encoding", "identity"), ("Accept", "image/png")]);
        sanitize_request(&mut h, Hygiene::default());
        assert!(!h.contains_key("accept-encoding"));
        assert_eq!(h["accept"], ACCEPT_IMAGE);
    }

    #[test]
    fn origin_is_kept_only_for_the_target_itself() {
        let target: http::Uri = "http://site.example/form".parse().expect("uri");
        for (origin, kept) in [
            ("http://site.example", true),
            ("HTTP://SITE.EXAMPLE", true),
            ("null", true),
            ("http://other.example", false),
            ("http://site.example:8080", false),
            ("https://site.example", false),
        ] {
            let mut h = map(&[("Origin", origin)]);
            trim_origin(&mut h, &target);
            assert_eq!(h.contains_key("origin"), kept, "{origin}");
        }
        let mut h = map(&[("Origin", "http://site.example:8080")]);
        trim_origin(&mut h, &"http://site.example:8080/x".parse().expect("uri"));
        assert!(h.contains_key("origin"));
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
