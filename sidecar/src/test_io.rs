//! What the listeners' tests share.

use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Closed by the other side within `within`, whatever it sent first (a challenge, an
/// error page).
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let drained = async {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drained).await.is_ok()
}
