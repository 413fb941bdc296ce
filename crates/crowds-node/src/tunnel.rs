//! Byte tunnels for `CONNECT`: splicing two upgraded streams together.
//!
//! Owns the copy loop of an HTTPS (or any TCP) tunnel once every hop has answered 200:
//! bytes flow both ways with bounded buffers, so a slow reader slows the sender (HTTP/2
//! flow control carries the pressure along the path), and the tunnel closes when
//! either side closes or fails. It never looks at the bytes: with TLS inside, jondos on
//! the path see only ciphertext.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Copy buffer per direction.
pub const TUNNEL_BUFFER: usize = 64 * 1024;

/// Takes the pending upgrade of a request or response, if hyper attached one.
pub fn take_upgrade<T>(msg: &mut T) -> Option<OnUpgrade>
where
    T: Extensions,
{
    msg.extensions_mut().remove::<OnUpgrade>()
}

/// Anything with HTTP extensions (requests and responses).
pub trait Extensions {
    /// The extensions map.
    fn extensions_mut(&mut self) -> &mut http::Extensions;
}

impl<B> Extensions for http::Request<B> {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Request::extensions_mut(self)
    }
}

impl<B> Extensions for http::Response<B> {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Response::extensions_mut(self)
    }
}

/// Once both upgrades complete, copies bytes between them until either side ends.
pub fn splice(a: OnUpgrade, b: OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(a), Ok(b)) = tokio::join!(a, b) else {
            return;
        };
        copy(TokioIo::new(a), TokioIo::new(b)).await;
    });
}

/// Once the upgrade completes, copies bytes between it and `stream`.
pub fn splice_stream<S>(a: OnUpgrade, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Ok(a) = a.await else { return };
        copy(TokioIo::new(a), stream).await;
    });
}

async fn copy<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, TUNNEL_BUFFER, TUNNEL_BUFFER).await
    {
        tracing::debug!("tunnel ended: {e}");
    }
}
