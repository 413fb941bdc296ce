//! The local SOCKS5 proxy: CONNECT only, names resolved at the exit.
//!
//! Owns the SOCKS conversation with a local application (bounded reads with a
//! deadline, then the reply). The tunnel itself goes through the same code as the HTTP
//! proxy's CONNECT: the SOCKS client is spliced to an HTTP `CONNECT` made to this jondo's
//! own proxy logic over an in-memory pipe, so both front ends share one path into the
//! crowd. It never logs destinations.

use crate::node::Node;
use crate::proxy;
use crowds_proto::socks::{self, Destination, Reply, SocksError};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time a client has to complete the SOCKS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads until `parse` has a complete message; `limit` bounds the bytes read.
async fn read_message<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
) -> Result<T, SocksError> {
    loop {
        if let Some((msg, used)) = parse(buf)? {
            buf.drain(..used);
            return Ok(msg);
        }
        if buf.len() >= limit {
            return Err(SocksError::Malformed);
        }
        let mut chunk = [0u8; 512];
        let n = stream
            .read(&mut chunk[..(limit - buf.len()).min(512)])
            .await
            .map_err(|_| SocksError::Malformed)?;
        if n == 0 {
            return Err(SocksError::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves one SOCKS client.
pub async fn serve(node: Arc<Node>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let method = read_message(
            &mut stream,
            &mut buf,
            socks::MAX_GREETING,
            socks::parse_greeting,
        )
        .await?;
        stream
            .write_all(&[socks::VERSION, method])
            .await
            .map_err(|_| SocksError::Malformed)?;
        if method != socks::METHOD_NO_AUTH {
            return Err(SocksError::NoMethods);
        }
        read_message(
            &mut stream,
            &mut buf,
            socks::MAX_REQUEST,
            socks::parse_request,
        )
        .await
    })
    .await;
    let dest = match handshake {
        Ok(Ok(dest)) => dest,
        Ok(Err(e)) => {
            if let Some(reply) = e.reply() {
                let _ = stream.write_all(&socks::encode_reply(reply)).await;
            }
            tracing::debug!("refused a SOCKS client: {e}");
            return;
        }
        Err(_) => return,
    };
    match open_tunnel(node, &dest).await {
        Ok(upgraded) => {
            if stream
                .write_all(&socks::encode_reply(Reply::Succeeded))
                .await
                .is_err()
            {
                return;
            }
            let mut tunnel = TokioIo::new(upgraded);
            // Bytes the client sent early (after its request) go first.
            if !buf.is_empty() && tunnel.write_all(&buf).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut stream,
                &mut tunnel,
                crate::tunnel::TUNNEL_BUFFER,
                crate::tunnel::TUNNEL_BUFFER,
            )
            .await;
        }
        Err(reply) => {
            let _ = stream.write_all(&socks::encode_reply(reply)).await;
        }
    }
}

/// Opens a CONNECT tunnel into the crowd through this jondo's own HTTP proxy logic.
async fn open_tunnel(
    node: Arc<Node>,
    dest: &Destination,
) -> Result<hyper::upgrade::Upgraded, Reply> {
    let (client, server) = tokio::io::duplex(crate::tunnel::TUNNEL_BUFFER);
    tokio::spawn(proxy::serve(node, server));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .map_err(|_| Reply::GeneralFailure)?;
    tokio::spawn(conn.with_upgrades());
    let authority = dest.authority();
    let req = Request::connect(authority.as_str())
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|_| Reply::GeneralFailure)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|_| Reply::GeneralFailure)?;
    match resp.status() {
        s if s.is_success() => hyper::upgrade::on(resp)
            .await
            .map_err(|_| Reply::GeneralFailure),
        StatusCode::FORBIDDEN => Err(Reply::NotAllowed),
        StatusCode::BAD_GATEWAY => Err(Reply::HostUnreachable),
        StatusCode::GATEWAY_TIMEOUT => Err(Reply::TtlExpired),
        _ => Err(Reply::GeneralFailure),
    }
}
