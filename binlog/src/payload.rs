//! MySQL's compressed transactions (`binlog_transaction_compression`, 8.0.20+): one
//! TRANSACTION_PAYLOAD event holds every event of a transaction after its GTID — BEGIN,
//! table maps, rows events, XID — compressed with zstd, and without checksums
//! (WL#3549). They are read out one at a time, each given back the CRC32 its file's
//! events carry, so that the decoder parses them and the replayer sends them in
//! `BINLOG '…'` against the file's format description exactly as events read from
//! the file. Nothing here trusts the payload: a length that runs past its end, a
//! nested payload or a stream that does not decompress is an error, never a panic,
//! and memory holds one inner event at a time.

use super::frame::{crc32, read_full, HEADER_LEN, MAX_EVENT};
use super::kind::MYSQL_TRANSACTION_PAYLOAD;
use std::io::Read;

/// The events inside one payload, in order.
pub struct PayloadEvents<R> {
    input: R,
    /// Append a CRC32 to each (the file's format description says its events have one).
    checksum: bool,
}

impl<R: Read> PayloadEvents<R> {
    pub fn new(input: R, checksum: bool) -> Self {
        PayloadEvents { input, checksum }
    }

    /// The next event, header to checksum; `None` after the last.
    pub fn next_event(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut event = vec![0u8; HEADER_LEN];
        let got = read_full(&mut self.input, &mut event).map_err(|e| decompressing(&e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err("compressed transaction: cut inside an event header".into());
        }
        let size = u32::from_le_bytes([event[9], event[10], event[11], event[12]]);
        if (size as usize) < HEADER_LEN || size > MAX_EVENT {
            return Err(format!(
                "compressed transaction: event length {size} is impossible"
            ));
        }
        if event[4] == MYSQL_TRANSACTION_PAYLOAD {
            return Err("compressed transaction inside another".into());
        }
        // Read as the bytes come: a length that lies reserves no memory it has not got.
        let body = size as u64 - HEADER_LEN as u64;
        let got = (&mut self.input)
            .take(body)
            .read_to_end(&mut event)
            .map_err(|e| decompressing(&e))?;
        if (got as u64) < body {
            return Err(format!(
                "compressed transaction: cut inside an event ({} of its {size} bytes)",
                HEADER_LEN + got
            ));
        }
        if self.checksum {
            let with_crc = size + 4;
            event[9..13].copy_from_slice(&with_crc.to_le_bytes());
            let crc = crc32(&event);
            event.extend_from_slice(&crc.to_le_bytes());
        }
        Ok(Some(event))
    }
}

pub(crate) fn decompressing(e: &std::io::Error) -> String {
    format!("compressed transaction does not decompress: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; HEADER_LEN];
        e[4] = kind;
        e[9..13].copy_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    #[test]
    fn inner_events_come_out_whole_with_their_checksum() {
        let stream = [event(2, b"BEGIN"), event(16, &[7; 8])].concat();
        let mut it = PayloadEvents::new(&stream[..], true);
        let first = it.next_event().unwrap().unwrap();
        assert_eq!(first.len(), HEADER_LEN + 5 + 4);
        assert_eq!(u32::from_le_bytes(first[9..13].try_into().unwrap()), 28);
        let (data, tail) = first.split_at(first.len() - 4);
        assert_eq!(u32::from_le_bytes(tail.try_into().unwrap()), crc32(data));
        assert_eq!(it.next_event().unwrap().unwrap()[4], 16);
        assert_eq!(it.next_event().unwrap(), None);
        // Without checksums they are as stored.
        let mut plain = PayloadEvents::new(&stream[..], false);
        assert_eq!(plain.next_event().unwrap().unwrap(), event(2, b"BEGIN"));
    }

    #[test]
    fn a_payload_that_lies_is_an_error() {
        let whole = event(2, b"BEGIN");
        let cut = &whole[..whole.len() - 1];
        assert!(PayloadEvents::new(cut, true).next_event().is_err());
        assert!(PayloadEvents::new(&whole[..7], true).next_event().is_err());
        let mut huge = whole.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PayloadEvents::new(&huge[..], true).next_event().is_err());
        let mut tiny = whole.clone();
        tiny[9..13].copy_from_slice(&3u32.to_le_bytes());
        assert!(PayloadEvents::new(&tiny[..], true).next_event().is_err());
        let nested = event(MYSQL_TRANSACTION_PAYLOAD, b"x");
        assert!(PayloadEvents::new(&nested[..], true).next_event().is_err());
    }
}
