//! The raft state on disk: one file in the state directory, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory)
//! and checksummed. A file that does not check out is reported and refused: starting
//! fresh would let this node vote twice in a term or forget committed entries.

use multiaz_driver::adapters::{DurableStore, Written};
use multiaz_engine::DurableState;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MULTIAZ1";
const FILE: &str = "raft-state";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({why}); refusing to start. Restore it from a backup, or remove it to rejoin this node as a new member after checking the cluster")]
    Corrupt { path: PathBuf, why: String },
}

/// The state file of one sidecar.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join(FILE),
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
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a multiaz state file (bad header)".into()));
        }
        let len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let body = &bytes[16..];
        if body.len() != len {
            return Err(corrupt(format!(
                "{} bytes of state where the header says {len}",
                body.len()
            )));
        }
        if crc32fast::hash(body) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        let state: DurableState =
            serde_json::from_slice(body).map_err(|e| corrupt(format!("undecodable state: {e}")))?;
        state.check().map_err(corrupt)?;
        Ok(Some(state))
    }

    /// Writes `state` durably: a temporary file, fsynced, renamed over the old one,
    /// and the directory fsynced.
    pub fn write(&self, state: &DurableState) -> std::io::Result<()> {
        let body = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("state larger than 4 GiB"))?;
        let tmp = self.path.with_extension("tmp");
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
            f.write_all(MAGIC)?;
            f.write_all(&len.to_be_bytes())?;
            f.write_all(&crc32fast::hash(&body).to_be_bytes())?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
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
                // Ends when the driver (the only sender) is gone.
                while let Ok((mut newest, first)) = asked.recv() {
                    let mut waiters = vec![first];
                    for (state, waiter) in asked.try_iter() {
                        newest = state;
                        waiters.push(waiter);
                    }
                    let result = file
                        .write(&newest)
                        .map_err(|e| format!("{}: {e}", file.path.display()));
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
