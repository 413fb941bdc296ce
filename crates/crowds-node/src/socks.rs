//! The SOCKS5 port. Not yet supported: it answers "no acceptable methods" and closes,
//! so a client fails at once with a clear error instead of hanging. (SOCKS5 through the
//! crowd is a later issue; the flag and listener exist so configurations stay valid.)

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers a SOCKS greeting with "no acceptable methods" (0xFF) and closes.
pub async fn refuse(mut stream: TcpStream) {
    let mut greeting = [0u8; 2];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_exact(&mut greeting),
    )
    .await;
    if matches!(read, Ok(Ok(_))) {
        let _ = stream.write_all(&[0x05, 0xff]).await;
    }
    tracing::debug!("refused a SOCKS client: SOCKS5 is not yet supported");
}
