//! Length-prefixed JSON frames for the simulation's own services (model mysqld, EC2,
//! salvage). Peer traffic uses the sidecar's framing instead.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

pub async fn send<T: Serialize>(s: &mut (impl AsyncWriteExt + Unpin), msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    s.write_all(&(body.len() as u32).to_be_bytes()).await?;
    s.write_all(&body).await?;
    s.flush().await
}

pub async fn recv<T: DeserializeOwned>(s: &mut (impl AsyncReadExt + Unpin)) -> io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(io::Error::other)
}

/// Connects with a bound, as a driver's connect timeout would.
pub async fn connect(host: &str, port: u16, within: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(within, TcpStream::connect((host, port))).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// One request, one response, all within `within`.
pub async fn call<Q: Serialize, A: DeserializeOwned>(
    host: &str,
    port: u16,
    req: &Q,
    within: Duration,
) -> io::Result<A> {
    let work = async {
        let mut s = TcpStream::connect((host, port)).await?;
        send(&mut s, req).await?;
        recv(&mut s).await
    };
    match tokio::time::timeout(within, work).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
    }
}
