//! Peer frames on a byte stream: a 4-byte big-endian length, then a JSON envelope.
//! A frame larger than [`MAX_FRAME`] or one that does not decode is an error, never a
//! panic; the reader then drops the connection.

use multiaz_engine::{NodeId, PeerMessage};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub message: PeerMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    #[error("undecodable frame: {0}")]
    Decode(String),
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    env: &Envelope,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(env).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Envelope, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_refusals() {
        let env = Envelope {
            from: NodeId(2),
            message: PeerMessage::LeaseGrant { epoch: 3, seq: 9 },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &env).await.unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).await.unwrap(), env);

        let mut huge = (MAX_FRAME + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame(&mut huge.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));

        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"nope!");
        assert!(matches!(
            read_frame(&mut junk.as_slice()).await,
            Err(FrameError::Decode(_))
        ));

        let cut = &buf[..buf.len() - 3];
        assert!(matches!(
            read_frame(&mut &cut[..]).await,
            Err(FrameError::Io(_))
        ));
    }
}
