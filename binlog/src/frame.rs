//! Binlog framing: every event is cut by its header's length and its CRC32 checked
//! before anything parses it. mysql_common's `Event::read` panics on an event cut off
//! mid-body (it unwraps a `read_exact`) and does not verify checksums, so it only ever
//! sees a frame that is whole and intact.

use super::kind::{FORMAT_DESCRIPTION, IN_USE, MARIADB_START_ENCRYPTION};
use mysql_common::binlog::events::BinlogEventFooter;
use mysql_common::binlog::BinlogFileHeader;
use std::fmt;
use std::io::{self, Read};

pub const HEADER_LEN: usize = 19;
const CRC_LEN: usize = 4;
/// No server writes an event larger than `max_allowed_packet`'s ceiling (1 GiB); a
/// bigger length is damage, not an event.
pub(crate) const MAX_EVENT: u32 = 1 << 30;

/// Why reading stopped before the end of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    NotABinlog,
    /// The file ends inside an event: `have` of its `need` bytes are there.
    Truncated {
        have: u64,
        need: u64,
    },
    BadLength(u32),
    Checksum {
        stored: u32,
        computed: u32,
    },
    NoFormatDescription,
    Encrypted,
    Unreadable(String),
}

/// Where and why a file stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the event (or header) that could not be read.
    pub offset: u64,
    pub kind: DamageKind,
}

impl Damage {
    /// A file cut inside its last event: what a crash leaves behind, not corruption.
    pub fn is_truncation(&self) -> bool {
        matches!(self.kind, DamageKind::Truncated { .. })
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            DamageKind::NotABinlog => f.write_str("not a binlog (no 0xfe 'bin' magic)"),
            DamageKind::Truncated { have, need } => {
                write!(f, "event cut off: {have} of its {need} bytes are there")
            }
            DamageKind::BadLength(n) => write!(f, "event length {n} is impossible"),
            DamageKind::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            DamageKind::NoFormatDescription => {
                f.write_str("the first event is not a format description event")
            }
            DamageKind::Encrypted => f.write_str("encrypted binlog: not supported"),
            DamageKind::Unreadable(e) => write!(f, "read error: {e}"),
        }
    }
}

/// One whole, checked event.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub offset: u64,
    /// The event as on disk, header and checksum included.
    pub bytes: &'a [u8],
    /// Whether `bytes` ends with a CRC32 (the format description says so).
    pub has_checksum: bool,
}

impl<'a> Frame<'a> {
    pub fn event_type(&self) -> u8 {
        self.bytes[4]
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_le_bytes(self.bytes[0..4].try_into().expect("4 bytes"))
    }
    pub fn server_id(&self) -> u32 {
        u32::from_le_bytes(self.bytes[5..9].try_into().expect("4 bytes"))
    }
    /// The event's own data: after the common header, before the checksum.
    pub fn body(&self) -> &'a [u8] {
        let end = self.bytes.len() - if self.has_checksum { CRC_LEN } else { 0 };
        &self.bytes[HEADER_LEN..end]
    }
}

/// Reads the events of one binlog file, in order, each checked.
pub struct Framer<R> {
    input: R,
    offset: u64,
    /// `None` until the format description event has been read.
    checksum: Option<bool>,
    buf: Vec<u8>,
    failed: bool,
}

impl<R: Read> Framer<R> {
    /// Checks the file's magic number.
    pub fn new(mut input: R) -> Result<Self, Damage> {
        let mut magic = [0u8; BinlogFileHeader::LEN];
        let got = read_full(&mut input, &mut magic).map_err(|e| unreadable(0, e))?;
        if got < magic.len() || magic != BinlogFileHeader::VALUE {
            return Err(Damage {
                offset: 0,
                kind: DamageKind::NotABinlog,
            });
        }
        Ok(Framer {
            input,
            offset: magic.len() as u64,
            checksum: None,
            buf: Vec::with_capacity(64 * 1024),
            failed: false,
        })
    }

    /// The next event; `Ok(None)` at a clean end of file. After an error, every later
    /// call returns `Ok(None)`: nothing past damage is trusted.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, Damage> {
        if self.failed {
            return Ok(None);
        }
        match self.read_one() {
            Ok(true) => Ok(Some(Frame {
                offset: self.offset - self.buf.len() as u64,
                bytes: &self.buf,
                has_checksum: self.checksum == Some(true),
            })),
            Ok(false) => Ok(None),
            Err(d) => {
                self.failed = true;
                Err(d)
            }
        }
    }

    fn read_one(&mut self) -> Result<bool, Damage> {
        let at = self.offset;
        self.buf.resize(HEADER_LEN, 0);
        let got = read_full(&mut self.input, &mut self.buf).map_err(|e| unreadable(at, e))?;
        if got == 0 {
            return Ok(false);
        }
        if got < HEADER_LEN {
            return Err(truncated(at, got, HEADER_LEN));
        }
        let size = u32::from_le_bytes(self.buf[9..13].try_into().expect("4 bytes"));
        let kind = self.buf[4];
        let is_fde = kind == FORMAT_DESCRIPTION;
        let min = HEADER_LEN + if is_fde { 57 } else { 0 };
        if (size as usize) < min || size > MAX_EVENT {
            return Err(Damage {
                offset: at,
                kind: DamageKind::BadLength(size),
            });
        }
        self.buf.resize(size as usize, 0);
        let got = read_full(&mut self.input, &mut self.buf[HEADER_LEN..])
            .map_err(|e| unreadable(at, e))?;
        if HEADER_LEN + got < size as usize {
            return Err(truncated(at, HEADER_LEN + got, size as usize));
        }
        self.offset += size as u64;
        match (self.checksum, is_fde) {
            (None, false) => {
                return Err(Damage {
                    offset: at,
                    kind: DamageKind::NoFormatDescription,
                })
            }
            (_, true) => {
                // The checksum algorithm is the byte before the format description's
                // own checksum (servers that predate checksums have neither).
                let footer = BinlogEventFooter::read(&self.buf[HEADER_LEN..])
                    .map_err(|e| unreadable(at, e))?;
                let crc = matches!(footer.get_checksum_alg(), Ok(Some(a)) if a as u8 == 1);
                self.checksum = Some(crc);
            }
            _ => {}
        }
        if kind == MARIADB_START_ENCRYPTION {
            return Err(Damage {
                offset: at,
                kind: DamageKind::Encrypted,
            });
        }
        if self.checksum == Some(true) {
            if self.buf.len() < HEADER_LEN + CRC_LEN {
                return Err(Damage {
                    offset: at,
                    kind: DamageKind::BadLength(size),
                });
            }
            let (data, tail) = self.buf.split_at(self.buf.len() - CRC_LEN);
            let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
            let computed = crc32(data);
            if stored != computed {
                return Err(Damage {
                    offset: at,
                    kind: DamageKind::Checksum { stored, computed },
                });
            }
        }
        Ok(true)
    }
}

/// The binlog checksum: CRC32 of the event with the in-use flag cleared.
pub fn crc32(event: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let flags = u16::from_le_bytes([event[17], event[18]]);
    if flags & IN_USE != 0 {
        h.update(&event[..17]);
        h.update(&(flags & !IN_USE).to_le_bytes());
        h.update(&event[19..]);
    } else {
        h.update(event);
    }
    h.finalize()
}

fn truncated(offset: u64, have: usize, need: usize) -> Damage {
    Damage {
        offset,
        kind: DamageKind::Truncated {
            have: have as u64,
            need: need as u64,
        },
    }
}

fn unreadable(offset: u64, e: io::Error) -> Damage {
    Damage {
        offset,
        kind: DamageKind::Unreadable(e.to_string()),
    }
}

/// Fills `buf` as far as the input goes; returns how much it got.
pub(crate) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
