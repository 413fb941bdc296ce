//! The API's common answers: errors, answers that say when to retry, and the interval
//! hints every crowd answer carries. Builds responses only; decides nothing.

use crowds_net::body::{self, Body};
use crowds_proto::roster::RosterConfig;
use http::{header, HeaderValue, Response, StatusCode};

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    body::json(status, &serde_json::json!({ "error": message }))
}

/// Adds the blender's suggested heartbeat interval for `config` to `resp`, and the poll
/// interval when the crowd's size is known (`members`).
pub(crate) fn add_hints(resp: &mut Response<Body>, config: &RosterConfig, members: Option<usize>) {
    let (heartbeat, poll) = crowds_proto::api::suggested_intervals(
        members.unwrap_or(0),
        config.heartbeat_timeout_ms,
        config.join_interval_ms,
    );
    let h = resp.headers_mut();
    h.insert(
        crowds_proto::api::HEARTBEAT_HINT_HEADER,
        HeaderValue::from(heartbeat),
    );
    if members.is_some() {
        h.insert(crowds_proto::api::POLL_HINT_HEADER, HeaderValue::from(poll));
    }
}

pub(crate) fn too_many(message: &str, retry_after_ms: u64) -> Response<Body> {
    retry_later(StatusCode::TOO_MANY_REQUESTS, message, retry_after_ms)
}

/// An answer that says when to try again, in the body (`retry_after_ms`, which jondos
/// read) and in `Retry-After` (whole seconds, for everyone else).
pub(crate) fn retry_later(
    status: StatusCode,
    message: &str,
    retry_after_ms: u64,
) -> Response<Body> {
    let mut resp = body::json(
        status,
        &serde_json::json!({ "error": message, "retry_after_ms": retry_after_ms }),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_ms.div_ceil(1000)),
    );
    resp
}
