//! What both daemons' control ports share: the status pages' look, HTML and metrics
//! answers, durations in words, and the refusal of foreign `Host` names.
//!
//! Owns presentation helpers only; it must not know what a jondo or a blender is.

use crate::body::{self, Body};
use http::{header, HeaderValue, Request, Response, StatusCode};

/// An HTML page as a response.
pub fn html_response(html: String) -> Response<Body> {
    let mut resp = Response::new(body::full(html));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// A Prometheus text exposition as a response.
pub fn metrics_response(text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

/// A duration in words.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The page's shared look (no external assets).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}\
.big{font-size:2em;font-weight:bold}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;border-radius:6px}\
.ok{color:#1a7f37}.bad{color:#b42318}table{border-collapse:collapse}td{padding:.2em 1em .2em 0}small{color:#666}";

/// The answer to a request whose `Host` is a name other than localhost, if it is one
/// (see [`crowds_proto::policy::control_host_allowed`]): a web page that rebinds its
/// own name to 127.0.0.1 must not read the member id, counters or PAC file.
pub fn refuse_foreign_host<B>(req: &Request<B>) -> Option<Response<Body>> {
    let host = req.headers().get(http::header::HOST).map(|h| h.as_bytes());
    if crowds_proto::policy::control_host_allowed(host) {
        return None;
    }
    Some(body::text(
        StatusCode::FORBIDDEN,
        "This port answers only requests addressed to its IP address or to localhost \
         (protection against DNS rebinding).\n",
    ))
}
