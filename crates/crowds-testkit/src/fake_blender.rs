//! A fake blender for driving a real `crowds jondo` process: it speaks the blender's
//! API over the same TLS (raw public keys), accepts any join, and serves whatever crowd
//! document the test chooses, counting what it is asked.

use crate::*;
use bytes::Bytes;
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::identity::{PublicKey, SecretKey};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::Method;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;

/// The wall clock in unix milliseconds (the daemons' own reading of it).
pub use crowds_net::net::now_ms;

/// A member entry.
pub fn member(id: u64, key: PublicKey, addr: SocketAddr) -> Member {
    Member {
        id,
        addr,
        key,
        flags: 0,
    }
}

/// A member with a fresh key and an address where nothing listens.
pub fn fake_member(id: u64) -> Member {
    member(
        id,
        SecretKey::generate().expect("key").public(),
        SocketAddr::from(([127, 0, 0, 99], 9000 + id as u16)),
    )
}

/// A document of the crowd "default" with pf 0.75.
pub fn doc(epoch: u64, members: &[Member], issued_at: u64, expires_at: u64) -> CrowdDocument {
    CrowdDocument {
        crowd: "default".into(),
        epoch,
        forward_probability: 0.75,
        issued_at,
        expires_at,
        members: members.to_vec(),
    }
}

/// A document issued now, valid for an hour.
pub fn fresh(epoch: u64, members: &[Member]) -> CrowdDocument {
    let now = now_ms();
    doc(epoch, members, now, now + HOUR_MS)
}

// ---------------------------------------------------------------------------------
// A fake blender: the real API's shape, serving a document the test picks.

/// What the fake blender saw and serves.
#[derive(Default)]
pub struct FakeState {
    /// What `GET /v1/crowd` serves (`None`: 503, no epoch yet).
    pub doc: Mutex<Option<Vec<u8>>>,
    /// `GET /v1/crowd` calls answered.
    pub fetches: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// TLS handshakes completed.
    pub handshakes: AtomicU64,
    /// Join requests: the client's TLS key and the JSON body.
    pub joins: Mutex<Vec<(PublicKey, serde_json::Value)>>,
}

/// A fake blender on 127.0.0.1 (aborted on drop).
pub struct FakeBlender {
    /// Its address.
    pub addr: SocketAddr,
    /// What it saw and serves.
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBlender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn fake_api(
    state: Arc<FakeState>,
    client: PublicKey,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/v1/join") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            state
                .joins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((client, json));
            respond(StatusCode::OK, r#"{"member_id":1,"status":"pending"}"#)
        }
        (Method::POST, "/v1/heartbeat") | (Method::POST, "/v1/leave") => {
            respond(StatusCode::NO_CONTENT, "")
        }
        (Method::GET, "/v1/crowd") => {
            // Snapshot first, count after: a fetch counted after the test swapped the
            // document and read the counter may still carry the old one, the next not.
            let doc = state.doc.lock().unwrap_or_else(|p| p.into_inner()).clone();
            state.fetches.fetch_add(1, Ordering::SeqCst);
            match doc {
                Some(bytes) => respond(StatusCode::OK, bytes),
                None => respond(StatusCode::SERVICE_UNAVAILABLE, "no epoch yet"),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

impl FakeBlender {
    /// Starts a fake blender presenting `identity`.
    pub async fn start(identity: &SecretKey) -> FakeBlender {
        let config = crowds_net::tls::server_config(identity, Arc::new(|_: &PublicKey| true))
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind fake blender");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(FakeState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    st.handshakes.fetch_add(1, Ordering::SeqCst);
                    let Some(client) = crowds_net::tls::peer_key(tls.get_ref().1) else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(fake_api(st, client, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeBlender { addr, state, task }
    }

    /// Serves `doc` from now on.
    pub fn serve(&self, doc: Option<Vec<u8>>) {
        *self.state.doc.lock().unwrap_or_else(|p| p.into_inner()) = doc;
    }

    /// `GET /v1/crowd` calls answered so far.
    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Waits until the jondo has certainly fetched (and judged) what is served now:
    /// fetches are sequential, so the second one started after this call is enough;
    /// the third proves the second was judged before it.
    pub async fn wait_judged(&self) {
        let start = self.fetches();
        eventually(
            "the jondo to fetch the document again",
            Duration::from_secs(20),
            || {
                let n = self.fetches();
                async move {
                    if n >= start + 3 {
                        Ok(())
                    } else {
                        Err(format!("{} fetches since", n - start))
                    }
                }
            },
        )
        .await;
    }
}

/// A jondo process pointed at a fake blender whose key file says `pinned`.
/// A jondo process driven by a fake blender.
pub struct Subject {
    /// The process.
    pub proc: Proc,
    /// Its identity key.
    pub key: PublicKey,
    /// Its peer address.
    pub peer: SocketAddr,
    /// Its HTTP proxy.
    pub proxy: SocketAddr,
    /// Its status port.
    pub control: SocketAddr,
}

/// Starts a jondo process (`--poll-interval 100ms`) against the fake blender at
/// `blender`, with `pinned` in its blender key file; with `allow_private` its exit may
/// reach loopback servers.
pub fn start_subject(
    kit: Kit,
    dir: &Path,
    blender: SocketAddr,
    pinned: PublicKey,
    allow_private: bool,
) -> Subject {
    let data_dir = dir.join("jondo");
    // Create the identity first, so the test knows the jondo's key.
    let key = crowds_net::files::load_or_create_identity(&data_dir)
        .expect("identity")
        .public();
    let key_file = dir.join("blender.pub");
    std::fs::write(&key_file, format!("{}\n", pinned.to_hex())).expect("key file");
    let pw = dir.join("password");
    write_file_mode(&pw, "fake blender password\n", 0o600);
    let ip = jondo_ip(8);
    let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let (proxy, control) = (free_local_addr(), free_local_addr());
    let proc = kit.spawn_jondo(&JondoSpec {
        name: "subject",
        data_dir: &data_dir,
        blender,
        blender_key: &key_file,
        account: "tester",
        password_file: &pw,
        peer,
        proxy,
        socks: free_local_addr(),
        control,
        allow_private,
        extra: &["--poll-interval", "100ms"],
        log_dir: dir,
    });
    Subject {
        proc,
        key,
        peer,
        proxy,
        control,
    }
}

/// Waits (bounded) until the subject has logged in; returns every join seen. Fails at
/// once, with its standard error, if the process ends.
pub async fn wait_joined(
    fake: &FakeBlender,
    s: &mut Subject,
) -> Vec<(PublicKey, serde_json::Value)> {
    eventually(
        "a join at the fake blender",
        Duration::from_secs(30),
        || {
            s.proc.assert_running();
            let joins = fake
                .state
                .joins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            async move {
                if joins.is_empty() {
                    Err("no join yet".to_string())
                } else {
                    Ok(joins)
                }
            }
        },
    )
    .await
}

/// The subject's status.json.
pub async fn status(s: &Subject) -> serde_json::Value {
    status_of(s.control).await.expect("status.json")
}

/// Epoch, member count and admission as the jondo reports them.
pub async fn summary(s: &Subject) -> (u64, u64, bool) {
    let st = status(s).await;
    (
        st["epoch"].as_u64().expect("epoch"),
        st["members"].as_u64().expect("members"),
        st["admitted"].as_bool().expect("admitted"),
    )
}

/// Waits (bounded) until [`summary`] is `want`.
pub async fn wait_summary(s: &Subject, want: (u64, u64, bool)) {
    eventually(
        &format!("status {want:?}"),
        Duration::from_secs(20),
        || async {
            let got = summary(s).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

/// The status of a proxied `GET url`.
pub async fn proxied_status(proxy: SocketAddr, url: &str) -> StatusCode {
    let mut c = HttpClient::connect(proxy).await.expect("connect proxy");
    let (status, _, _) = c.get(url, &[]).await.expect("proxied request");
    status
}
