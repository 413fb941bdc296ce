//! The physical limit: chains of k byte relays between the client and the origin.
//!
//! Each relay accepts a connection, connects to the next relay (or the origin) and
//! copies bytes both ways (`tokio::io::copy_bidirectional_with_sizes`, 64 KiB buffers).
//! A TCP chain is plain TCP throughout. A TLS chain has the shape of a crowd path of k
//! jondos: the client reaches the first relay over plain TCP (as a browser reaches its
//! own jondo), relay i talks to relay i+1 over TLS 1.3 with raw Ed25519 keys (the
//! crowd's link configuration from `crowds_net::tls`; each relay terminates TLS and
//! originates a new session), and the last relay reaches the origin over plain TCP. So
//! k relays have k-1 TLS links, exactly as a path of k jondos has k-1 crowd links.

use anyhow::{Context, Result};
use crowds_proto::identity::SecretKey;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// Copy buffer of each direction of a relay.
pub const RELAY_BUFFER: usize = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
enum Inbound {
    Plain,
    Tls(TlsAcceptor),
}

#[derive(Clone)]
enum Outbound {
    Plain(SocketAddr),
    Tls(SocketAddr, TlsConnector),
}

/// Whether a chain's relays talk TLS to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP everywhere.
    Tcp,
    /// TLS 1.3 between relays.
    Tls,
}

async fn dial(out: &Outbound) -> Result<Box<dyn Io>> {
    match out {
        Outbound::Plain(addr) => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        Outbound::Tls(addr, connector) => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let tls = connector.connect(crowds_net::tls::server_name(), s).await?;
            Ok(Box::new(tls))
        }
    }
}

async fn serve(stream: TcpStream, inbound: Inbound, outbound: Outbound) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut down: Box<dyn Io> = match inbound {
        Inbound::Plain => Box::new(stream),
        Inbound::Tls(acceptor) => Box::new(acceptor.accept(stream).await?),
    };
    let mut up = dial(&outbound).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, RELAY_BUFFER, RELAY_BUFFER)
        .await?;
    Ok(())
}

async fn spawn_relay(
    ip: IpAddr,
    inbound: Inbound,
    outbound: Outbound,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .with_context(|| format!("bind a relay on {ip}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (i, o) = (inbound.clone(), outbound.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, i, o).await;
                    });
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    });
    Ok(addr)
}

/// Starts a chain of `k` relays on `ips[0..k]` ending at `origin`, each on a thread of
/// its own if `own_threads`; returns the address the client connects to.
pub async fn start_chain(
    kind: Kind,
    ips: &[IpAddr],
    origin: SocketAddr,
    shutdown: CancellationToken,
    own_threads: bool,
) -> Result<SocketAddr> {
    let k = ips.len();
    anyhow::ensure!(k >= 1, "a chain needs at least one relay");
    let keys: Vec<SecretKey> = (0..k)
        .map(|_| SecretKey::generate().map_err(|e| anyhow::anyhow!("key: {e:?}")))
        .collect::<Result<_>>()?;
    let mut next = Outbound::Plain(origin);
    let mut entry = origin;
    for i in (0..k).rev() {
        let inbound = if kind == Kind::Tls && i > 0 {
            let config = crowds_net::tls::server_config(&keys[i], Arc::new(|_| true))?;
            Inbound::Tls(TlsAcceptor::from(Arc::new(config)))
        } else {
            Inbound::Plain
        };
        let (ip, inb, token) = (ips[i], inbound.clone(), shutdown.clone());
        entry = if own_threads {
            let name = format!("relay{}", i + 1);
            let runtime = crate::own_thread::current_thread();
            crate::own_thread::start(&name, runtime, shutdown.clone(), move || {
                spawn_relay(ip, inb, next, token)
            })
            .await?
        } else {
            spawn_relay(ip, inb, next, token).await?
        };
        next = match inbound {
            Inbound::Plain => Outbound::Plain(entry),
            Inbound::Tls(_) => {
                let client = crowds_net::tls::client_config(&keys[i - 1], keys[i].public())?;
                Outbound::Tls(entry, TlsConnector::from(Arc::new(client)))
            }
        };
    }
    Ok(entry)
}
