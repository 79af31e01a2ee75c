//! The raft state on disk, in the state directory: a base file holding a whole state,
//! replaced atomically (a temporary file, fsynced, renamed over the old one, the
//! directory fsynced), and an append-only log of what changed since, one checksummed
//! record per write (fsynced). A write that only adds entries or moves the hard state
//! is one small append; a compaction (the engine folding its log into a snapshot), a
//! first write after a start, or a long log rewrites the base and starts a new log.
//! Each base carries a generation and its log the same: a log left from an older base
//! (a crash between the two renames) is ignored, its records being in the base.
//!
//! A file that does not check out is reported and refused: starting fresh would let
//! this node vote twice in a term or forget committed entries. The one exception is
//! the log's last record when it was torn by a crash: its fsync never returned, so the
//! driver released nothing that depended on it, and it is dropped.

use multiaz_driver::adapters::{DurableStore, Written};
use multiaz_engine::{DurableState, HardState, PersistBatch, StoredEntry};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first base format: a whole state, no generation and no log beside it.
const MAGIC: &[u8; 8] = b"MULTIAZ1";
/// A base with its generation.
const MAGIC_BASE: &[u8; 8] = b"MULTIAZ2";
const MAGIC_LOG: &[u8; 8] = b"MAZLOG01";
const FILE: &str = "raft-state";
const LOG_FILE: &str = "raft-log";
/// Records appended after which the next write folds everything into a new base.
const MAX_APPENDS: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Base {
    generation: u64,
    state: DurableState,
}

/// One write appended: the hard state and start count as they now are, and the new
/// entries (the first one's index truncates any older suffix from there, as in
/// [`PersistBatch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Append {
    hard_state: HardState,
    boots: u64,
    entries: Vec<StoredEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({why}); refusing to start. Restore the state directory from a backup, or remove both its files (raft-state, raft-log) to rejoin this node as a new member after checking the cluster")]
    Corrupt { path: PathBuf, why: String },
}

/// The state files of one sidecar.
pub struct StateFile {
    path: PathBuf,
    log: PathBuf,
    /// The base's generation, as loaded or last written.
    generation: Cell<u64>,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join(FILE),
            log: dir.join(LOG_FILE),
            generation: Cell::new(0),
        }
    }

    /// The state file in `dir`, which is created 0700 if missing and narrowed to 0700
    /// if others may enter it (the raft state is the node's vote and log: nobody else
    /// may replace it).
    pub fn open(dir: &Path) -> Result<StateFile, StateError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mode = fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            // Someone else's directory cannot be narrowed: shared with a group is
            // tolerated, open to everyone is not.
            if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
                if mode & 0o007 != 0 {
                    return Err(io(std::io::Error::new(
                        e.kind(),
                        format!(
                            "open to every user (mode {:03o}) and not ours to narrow: {e}",
                            mode & 0o777
                        ),
                    )));
                }
            }
        }
        Ok(StateFile::new(dir))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `None` when there is no state yet (first start).
    pub fn load(&self) -> Result<Option<DurableState>, StateError> {
        let Some((generation, mut state)) = self.load_base()? else {
            // No state: a log left from an earlier life of this directory must never be
            // taken for the new base's, so the first base is numbered past it.
            if let Ok(bytes) = fs::read(&self.log) {
                if let Some(g) = log_generation(&bytes) {
                    self.generation.set(g);
                }
            }
            return Ok(None);
        };
        self.generation.set(generation);
        match fs::read(&self.log) {
            Ok(bytes) => self.replay(&bytes, generation, &mut state)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    path: self.log.clone(),
                    source,
                })
            }
        }
        state.check().map_err(|why| StateError::Corrupt {
            path: self.path.clone(),
            why,
        })?;
        Ok(Some(state))
    }

    fn load_base(&self) -> Result<Option<(u64, DurableState)>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |why: String| StateError::Corrupt {
            path: self.path.clone(),
            why,
        };
        let magic = bytes.get(..8);
        if bytes.len() < 16 || (magic != Some(MAGIC) && magic != Some(MAGIC_BASE)) {
            return Err(corrupt("not a multiaz state file (bad header)".into()));
        }
        let body = checked(&bytes[8..]).map_err(corrupt)?;
        if body.len() != bytes.len() - 16 {
            return Err(corrupt(format!(
                "{} bytes of state where the header says {}",
                bytes.len() - 16,
                body.len()
            )));
        }
        let undecodable = |e: serde_json::Error| corrupt(format!("undecodable state: {e}"));
        if magic == Some(MAGIC) {
            let state: DurableState = serde_json::from_slice(body).map_err(undecodable)?;
            return Ok(Some((0, state)));
        }
        let base: Base = serde_json::from_slice(body).map_err(undecodable)?;
        Ok(Some((base.generation, base.state)))
    }

    /// Applies the log's records to the base's `state`: all of them, but a torn last
    /// one; none when the log belongs to an older base.
    fn replay(
        &self,
        bytes: &[u8],
        generation: u64,
        state: &mut DurableState,
    ) -> Result<(), StateError> {
        let corrupt = |why: String| StateError::Corrupt {
            path: self.log.clone(),
            why,
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC_LOG {
            return Err(corrupt("not a multiaz state log (bad header)".into()));
        }
        if log_generation(bytes) != Some(generation) {
            // Left from before the base was last rewritten: the base holds it all.
            return Ok(());
        }
        let mut at = 16;
        while at < bytes.len() {
            let body = match record(&bytes[at..]) {
                Record::Whole(body) => body,
                // The last write, whose fsync never returned.
                Record::Torn => break,
                Record::Damaged(why) => return Err(corrupt(format!("record at byte {at}: {why}"))),
            };
            let record: Append = serde_json::from_slice(body)
                .map_err(|e| corrupt(format!("record at byte {at}: {e}")))?;
            state.apply(PersistBatch {
                hard_state: Some(record.hard_state),
                snapshot: None,
                entries: record.entries,
                then_send: Vec::new(),
            });
            state.boots = record.boots;
            at += RECORD_HEADER + body.len();
        }
        Ok(())
    }

    /// Writes the whole of `state` as a new base (a temporary file, fsynced, renamed
    /// over the old one, the directory fsynced) and starts an empty log for it.
    pub fn write(&self, state: &DurableState) -> std::io::Result<()> {
        let generation = self.generation.get() + 1;
        let base = Base {
            generation,
            state: state.clone(),
        };
        let body = serde_json::to_vec(&base).map_err(std::io::Error::other)?;
        replace(&self.path, &framed(MAGIC_BASE, &body)?)?;
        // A crash here leaves the older log beside the new base: its generation tells.
        replace(&self.log, &log_header(generation))?;
        self.generation.set(generation);
        Ok(())
    }

    /// Appends one record to the log, fsynced.
    fn append(&self, record: &Append) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let body = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let bytes = log_record(&body)?;
        let mut f = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.log)?;
        f.write_all(&bytes)?;
        f.sync_data()
    }
}

/// `magic`, then the body's length and CRC32 (big-endian), then the body.
fn framed(magic: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("state larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(magic.len() + 8 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The body of a length-and-checksum frame at the start of `bytes`.
fn checked(bytes: &[u8]) -> Result<&[u8], String> {
    let (Some(len), Some(crc)) = (bytes.get(..4), bytes.get(4..8)) else {
        return Err("cut short in its header".into());
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let body = bytes.get(8..8 + len).ok_or_else(|| {
        format!(
            "cut short: {} bytes where the header says {len}",
            bytes.len() - 8
        )
    })?;
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

/// A log record's header: the body's length, that length's CRC32 and the body's.
const RECORD_HEADER: usize = 12;

/// One log record: its header (length, the length's CRC32, the body's CRC32), then
/// the body. The length has a checksum of its own so that a damaged one is told from
/// a record cut short by a crash.
fn log_record(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("record larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&len.to_be_bytes()).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// What the log holds at one place.
enum Record<'a> {
    Whole(&'a [u8]),
    /// The file ends inside it, or only zeros follow (what a crash leaves of a write
    /// whose fsync never returned).
    Torn,
    Damaged(String),
}

fn record(bytes: &[u8]) -> Record<'_> {
    if bytes.iter().all(|b| *b == 0) {
        return Record::Torn;
    }
    let Some(header) = bytes.get(..RECORD_HEADER) else {
        return Record::Torn;
    };
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if crc32fast::hash(&header[..4]) != word(4) {
        return Record::Damaged("its length fails its checksum".into());
    }
    let len = word(0) as usize;
    if len == 0 {
        return Record::Damaged("an empty record".into());
    }
    let Some(body) = bytes.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return Record::Torn;
    };
    if crc32fast::hash(body) != word(8) {
        // Its length checks out: a body cut short runs to the end of the file.
        return match bytes.len() == RECORD_HEADER + len {
            true => Record::Torn,
            false => Record::Damaged("checksum mismatch".into()),
        };
    }
    Record::Whole(body)
}

/// The generation a log's header names, if it has one.
fn log_generation(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..8) != Some(MAGIC_LOG.as_slice()) {
        return None;
    }
    let g: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(g))
}
fn log_header(generation: u64) -> Vec<u8> {
    let mut h = MAGIC_LOG.to_vec();
    h.extend_from_slice(&generation.to_be_bytes());
    h
}

/// `path` replaced by `bytes`: a temporary file, fsynced, renamed over it, the
/// directory fsynced.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A leftover (or planted) temporary file, symlink included, is removed, not
        // written through; the new one is created, never opened, and only ours.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What turns `old` (on disk) into `new` as one appended record: the same snapshot, and
/// `new`'s entries are `old`'s up to some point, then new ones. `None`: a new base.
fn appendable(old: &DurableState, new: &DurableState) -> Option<Append> {
    if old.snapshot != new.snapshot {
        return None;
    }
    let common = old
        .entries
        .iter()
        .zip(&new.entries)
        .take_while(|(a, b)| a == b)
        .count();
    if common < old.entries.len() && common == new.entries.len() {
        // Entries gone with none in their place: a record cannot say it.
        return None;
    }
    Some(Append {
        hard_state: new.hard_state,
        boots: new.boots,
        entries: new.entries[common..].to_vec(),
    })
}

/// The writer thread's side: what is on disk, and how much has been appended to it.
struct Writer {
    file: StateFile,
    on_disk: Option<DurableState>,
    appends: usize,
    /// A write failed: what is on disk is no longer known, so nothing more is written
    /// (the driver stops at the first failure anyway).
    failed: Option<String>,
}

impl Writer {
    fn write(&mut self, state: &DurableState) -> std::io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(format!(
                "an earlier write failed: {why}"
            )));
        }
        let result = self.write_unchecked(state);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn write_unchecked(&mut self, state: &DurableState) -> std::io::Result<()> {
        let append = self.on_disk.as_ref().and_then(|old| appendable(old, state));
        match append {
            Some(record) if self.appends < MAX_APPENDS => {
                self.file.append(&record)?;
                self.appends += 1;
            }
            // The first write after a start is a new base: a torn record left at the
            // end of the log goes with the old one.
            _ => {
                self.file.write(state)?;
                self.appends = 0;
            }
        }
        self.on_disk = Some(state.clone());
        Ok(())
    }
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The state file written on a thread of its own, so that an fsync (milliseconds on a
/// good disk, far more on a busy one) never holds up the driver's loop; the driver
/// holds back whatever follows a write until it is durable. Writes asked for while one
/// is under way are folded into one: each state holds everything before it, so only
/// the newest is written, and everyone waiting is told when it is durable.
pub struct StateWriter {
    path: PathBuf,
    queue: std::sync::mpsc::Sender<(DurableState, Waiter)>,
}

impl StateWriter {
    pub fn start(file: StateFile) -> std::io::Result<StateWriter> {
        let (queue, asked) = std::sync::mpsc::channel::<(DurableState, Waiter)>();
        let path = file.path.clone();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut writer = Writer {
                    file,
                    on_disk: None,
                    appends: 0,
                    failed: None,
                };
                // Ends when the driver (the only sender) is gone.
                while let Ok((mut newest, first)) = asked.recv() {
                    let mut waiters = vec![first];
                    for (state, waiter) in asked.try_iter() {
                        newest = state;
                        waiters.push(waiter);
                    }
                    let result = writer
                        .write(&newest)
                        .map_err(|e| format!("{}: {e}", writer.file.path.display()));
                    for waiter in waiters {
                        // A driver that stopped no longer waits.
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(StateWriter { path, queue })
    }
}

impl DurableStore for StateWriter {
    fn persist(&mut self, state: &DurableState) -> Result<Written, String> {
        let (waiter, durable) = tokio::sync::oneshot::channel();
        self.queue
            .send((state.clone(), waiter))
            .map_err(|_| format!("{}: the state writer has stopped", self.path.display()))?;
        Ok(Written::Later(durable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiaz_engine::{HardState, StoredEntry};

    fn state() -> DurableState {
        DurableState {
            hard_state: HardState {
                term: 3,
                vote: 2,
                commit: 1,
            },
            snapshot: None,
            entries: vec![StoredEntry {
                index: 1,
                term: 3,
                bytes: vec![1, 2, 3],
            }],
            boots: 2,
        }
    }

    #[test]
    fn round_trip_and_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert!(f.load().unwrap().is_none());
        f.write(&state()).unwrap();
        assert_eq!(f.load().unwrap(), Some(state()));
        assert!(!f.path().with_extension("tmp").exists());
    }

    #[test]
    fn the_state_is_ours_alone_and_a_planted_symlink_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = StateFile::open(&state_dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir), 0o700);
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, f.path().with_extension("tmp")).unwrap();
        f.write(&state()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(f.load().unwrap(), Some(state()));
        assert_eq!(mode(f.path()), 0o600);
    }

    fn entry(index: u64, term: u64) -> StoredEntry {
        StoredEntry {
            index,
            term,
            bytes: vec![index as u8, term as u8],
        }
    }

    /// Four writes a node makes in turn: a start, two entries, a commit, and a new
    /// leader's entry overwriting the second.
    fn history() -> Vec<DurableState> {
        let mut s = state();
        let mut out = vec![s.clone()];
        s.entries.extend([entry(2, 3), entry(3, 3)]);
        out.push(s.clone());
        s.hard_state.commit = 2;
        out.push(s.clone());
        s.hard_state.term = 4;
        s.entries.truncate(2);
        s.entries.push(entry(3, 4));
        out.push(s.clone());
        out
    }

    fn writer(dir: &Path) -> Writer {
        Writer {
            file: StateFile::new(dir),
            on_disk: None,
            appends: 0,
            failed: None,
        }
    }

    /// A writer in `dir` that has written [`history`].
    fn written(dir: &Path) -> (Writer, Vec<DurableState>) {
        let mut w = writer(dir);
        let states = history();
        for s in &states {
            w.write(s).unwrap();
        }
        (w, states)
    }

    #[test]
    fn writes_after_the_first_are_appended_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (w, states) = written(dir.path());
        assert_eq!(w.appends, 3, "one base, then records");
        let base = fs::metadata(dir.path().join(FILE)).unwrap().len();
        let loaded = StateFile::new(dir.path()).load().unwrap();
        assert_eq!(loaded.as_ref(), states.last());
        // The base holds only the first state: the rest came from the log.
        assert_eq!(
            StateFile::new(dir.path())
                .load_base()
                .unwrap()
                .map(|(_, s)| s),
            Some(states[0].clone())
        );
        assert!(base < 400, "{base} bytes");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_before_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, states) = written(dir.path());
        let log = dir.path().join(LOG_FILE);
        let whole = fs::read(&log).unwrap();
        // Cut inside the last record: the state before it.
        fs::write(&log, &whole[..whole.len() - 3]).unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap().as_ref(), Some(&states[2]));
        // A byte flipped in the first record, with records after it: damage.
        let mut bad = whole.clone();
        bad[16 + RECORD_HEADER + 2] ^= 0x20;
        fs::write(&log, &bad).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("raft-log") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_write_and_a_damaged_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, states) = written(dir.path());
        let log = dir.path().join(LOG_FILE);
        let whole = fs::read(&log).unwrap();
        let f = StateFile::new(dir.path());
        // What some file systems leave of an append cut by a crash: zeros.
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 40]);
        fs::write(&log, &zeros).unwrap();
        assert_eq!(f.load().unwrap().as_ref(), states.last());
        // The first record's length made huge: not taken for a torn tail.
        let mut bad = whole.clone();
        bad[16] = 0x7f;
        fs::write(&log, &bad).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("its length fails its checksum"), "{e}");
    }

    #[test]
    fn after_a_failed_write_the_writer_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir.path().join("gone"));
        assert!(w.write(&state()).is_err());
        fs::create_dir(dir.path().join("gone")).unwrap();
        let e = w.write(&state()).unwrap_err().to_string();
        assert!(e.contains("an earlier write failed"), "{e}");
        assert!(!dir.path().join("gone").join(FILE).exists());
    }

    #[test]
    fn a_log_left_in_an_empty_state_directory_is_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, states) = written(dir.path());
        // The base is removed by hand; its log (generation 1) stays behind.
        fs::remove_file(dir.path().join(FILE)).unwrap();
        let stale_log = fs::read(dir.path().join(LOG_FILE)).unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap(), None);
        let fresh = DurableState::default();
        f.write(&fresh).unwrap();
        // A crash between the new base's rename and the log's: the stale log is back.
        fs::write(dir.path().join(LOG_FILE), &stale_log).unwrap();
        assert_eq!(f.load().unwrap(), Some(fresh));
        assert_ne!(Some(&DurableState::default()), states.last());
    }

    #[test]
    fn a_log_older_than_its_base_is_ignored_and_a_snapshot_makes_a_new_base() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, states) = written(dir.path());
        let log = dir.path().join(LOG_FILE);
        let older_log = fs::read(&log).unwrap();
        // Compaction: the snapshot cannot be appended, a new base is written.
        let mut compacted = states[3].clone();
        compacted.snapshot = Some(multiaz_engine::StoredSnapshot {
            index: 2,
            term: 3,
            voters: vec![1, 2, 3],
            record: b"{}".to_vec(),
        });
        compacted.entries.retain(|e| e.index > 2);
        w.write(&compacted).unwrap();
        assert_eq!(w.appends, 0);
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap(), Some(compacted.clone()));
        // A crash between the base's rename and the log's: the old log is still there,
        // and must not be replayed onto the new base.
        fs::write(&log, &older_log).unwrap();
        assert_eq!(f.load().unwrap(), Some(compacted));
    }

    #[test]
    fn a_state_file_of_the_first_format_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::to_vec(&state()).unwrap();
        fs::write(dir.path().join(FILE), framed(MAGIC, &body).unwrap()).unwrap();
        assert_eq!(StateFile::new(dir.path()).load().unwrap(), Some(state()));
    }

    #[tokio::test]
    async fn the_writer_thread_answers_each_write_once_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = StateWriter::start(StateFile::new(dir.path())).unwrap();
        let mut waits = Vec::new();
        for term in 1..=20 {
            let mut s = state();
            s.hard_state.term = term;
            match writer.persist(&s).unwrap() {
                Written::Later(durable) => waits.push(durable),
                Written::Now => panic!("the writer writes on its own thread"),
            }
        }
        for durable in waits {
            durable.await.unwrap().unwrap();
        }
        // Folded or not, the newest state is the one on disk.
        let on_disk = StateFile::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(on_disk.hard_state.term, 20);
    }

    #[tokio::test]
    async fn a_write_the_disk_refuses_is_answered_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        // A state directory that is gone: the temporary file cannot be created.
        let gone = dir.path().join("gone");
        let mut writer = StateWriter::start(StateFile::new(&gone)).unwrap();
        let Written::Later(durable) = writer.persist(&state()).unwrap() else {
            panic!("the writer writes on its own thread");
        };
        let e = durable.await.unwrap().unwrap_err();
        assert!(e.contains("gone"), "{e}");
    }

    #[test]
    fn a_checksummed_state_with_an_impossible_term_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        let mut s = state();
        s.hard_state.term = u64::MAX;
        f.write(&s).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("implausible"), "{e}");
        let mut s = state();
        s.entries[0].term = 4;
        f.write(&s).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("past the current term"), "{e}");
    }

    #[test]
    fn a_corrupt_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        f.write(&state()).unwrap();
        let mut bytes = fs::read(f.path()).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(f.path(), &bytes).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("raft-state") && e.contains("checksum"), "{e}");
        fs::write(f.path(), &bytes[..bytes.len() - 5]).unwrap();
        assert!(f.load().unwrap_err().to_string().contains("header says"));
        fs::write(f.path(), b"hello").unwrap();
        assert!(f.load().unwrap_err().to_string().contains("bad header"));
    }
}
