//! The blender's HTTPS API, one request per connection: dispatch, heartbeats and leaves,
//! and the crowd document (whole, as a delta, or 304) for those allowed to read it.
//! Joins are in [`crate::join`]. Talks to the store through [`State::with_store`]; never
//! cuts epochs.

use crate::join::join;
use crate::reply::{add_hints, error};
use crate::state::{lock, Crowd, Published, State, DELTA_BASES};
use crowds_net::body::{self, Body};
use crowds_net::net::now_ms;
use crowds_proto::identity::PublicKey;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(crate) async fn api(
    state: Arc<State>,
    client: PublicKey,
    source: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/crowd") => match readable_crowd(&state, client, source, None).await {
            Ok(name) => crowd(&state, &name, &req),
            Err(refused) => refused,
        },
        (Method::GET, p) if p.starts_with("/v1/crowd/") => {
            match readable_crowd(&state, client, source, Some(&p[10..])).await {
                Ok(name) => crowd(&state, &name, &req),
                Err(refused) => refused,
            }
        }
        (Method::POST, "/v1/join") => join(state, client, source, req).await,
        (Method::POST, "/v1/heartbeat") => {
            match state
                .with_store(move |s| s.heartbeat(&client, now_ms()))
                .await
            {
                Ok(true) => {
                    state.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    state.note_member(client, source, now_ms());
                    let mut resp = body::text(StatusCode::NO_CONTENT, "");
                    // The heartbeat hint is the same for every crowd (one timeout).
                    if let Some(c) = state.crowds.values().next() {
                        add_hints(&mut resp, &c.config, None);
                    }
                    resp
                }
                Ok(false) => error(StatusCode::FORBIDDEN, "not a member: join again"),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
            }
        }
        (Method::POST, "/v1/leave") => match state.with_store(move |s| s.leave(&client)).await {
            Ok(()) => body::text(StatusCode::NO_CONTENT, ""),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
        },
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Why a client that is neither a member nor a pending member gets no document.
pub(crate) const NOT_A_READER: &str =
    "only members and pending members of a crowd may read its document: join first";

/// The crowd whose document `client` may read (`wanted`, or else its own): one whose
/// current document lists its key, or whose member or pending member the store says it
/// is. Anyone else gets 403 (see "Who may read the member list" above).
pub(crate) async fn readable_crowd(
    state: &Arc<State>,
    client: PublicKey,
    source: IpAddr,
    wanted: Option<&str>,
) -> Result<String, Response<Body>> {
    // The current documents first: no store call for members' polls.
    let listed = state
        .crowds
        .iter()
        .find(|(name, c)| wanted.is_none_or(|w| w == name.as_str()) && c.lists(&client))
        .map(|(name, _)| name.clone());
    let name = match listed {
        Some(name) => name,
        None => match state.with_store(move |s| s.crowd_of(&client)).await {
            Ok(Some(name)) if wanted.is_none_or(|w| w == name) => name,
            Ok(_) => return Err(error(StatusCode::FORBIDDEN, NOT_A_READER)),
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                ))
            }
        },
    };
    state.note_member(client, source, now_ms());
    Ok(name)
}

pub(crate) fn crowd(state: &State, name: &str, req: &Request<Incoming>) -> Response<Body> {
    let Some(crowd) = state.crowd(name) else {
        return error(
            StatusCode::NOT_FOUND,
            "this blender does not serve that crowd",
        );
    };
    let members = crowd
        .published
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(0, |p| p.document.members.len());
    let mut resp = crowd_document(crowd, req);
    add_hints(&mut resp, &crowd.config, Some(members));
    resp
}

pub(crate) fn crowd_document(crowd: &Crowd, req: &Request<Incoming>) -> Response<Body> {
    let published = crowd.published.read().unwrap_or_else(|p| p.into_inner());
    let Some(p) = published.as_ref() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no epoch published yet");
    };
    let etag = HeaderValue::from_str(&p.etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if req.headers().get(header::IF_NONE_MATCH) == Some(&etag) {
        let mut resp = body::text(StatusCode::NOT_MODIFIED, "");
        resp.headers_mut().insert(header::ETAG, etag);
        return resp;
    }
    // A jondo holding an earlier document gets only the change (it checks the whole
    // new document's signature after applying it).
    let have = req
        .headers()
        .get(crowds_proto::api::HAVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(crowds_proto::api::parse_have);
    let (bytes, content_type) = match have.and_then(|base| delta_to(crowd, p, base)) {
        Some(delta) => (delta, crowds_proto::api::DELTA_CONTENT_TYPE),
        None => (p.bytes.clone(), crowds_proto::api::DOCUMENT_CONTENT_TYPE),
    };
    let mut resp = Response::new(body::full(bytes.as_ref().clone()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// The delta from the earlier document `base` (epoch, issue time) to the current one, if
/// that document is still known; computed once per base and cached.
pub(crate) fn delta_to(
    crowd: &Crowd,
    current: &Published,
    base: (u64, u64),
) -> Option<Arc<Vec<u8>>> {
    if base == (current.epoch, current.issued_at) {
        return None;
    }
    if let Some(d) = lock(&crowd.deltas).get(&base) {
        return Some(d.clone());
    }
    let doc = lock(&crowd.history)
        .iter()
        .rev()
        .find(|d| (d.epoch, d.issued_at) == base)?
        .clone();
    let delta =
        Arc::new(crowds_proto::delta::DocumentDelta::encode_between(&doc, &current.bytes).ok()?);
    let mut deltas = lock(&crowd.deltas);
    if deltas.len() < DELTA_BASES {
        deltas.insert(base, delta.clone());
    }
    Some(delta)
}
