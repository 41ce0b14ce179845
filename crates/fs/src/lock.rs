//! Advisory locks on an output folder: one writer of a result set at a time.
//!
//! Two commands publishing into one folder at once can each publish a complete-looking set
//! whose files come from different runs (one's Gram beside the other's report). A writer holds
//! [`DirLock`] for its whole run; a second writer is refused at once, told which process holds
//! the folder. The lock is the operating system's (`flock`, emulated with POSIX locks on NFS):
//! it is released when the holder exits, however it exits, so a killed run never leaves a stale
//! lock behind. The lock file itself stays (deleting it would let two processes lock two
//! different files of the same name).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file of a result folder, held exclusively by a single writer (`stiff gram`,
/// `stiff measure`) or shared by the shards of one tiled job (`stiff cross`).
pub const LOCK_FILE: &str = ".stiff.lock";

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The only holder: refused while anyone else holds the lock, shared or not.
    Exclusive,
    /// One of several cooperating holders (shards of one job): refused only while an exclusive
    /// holder has it.
    Shared,
}

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "{} is in use by another process (lock last taken by {holder}); wait for it to finish, or give another \
         output folder",
        dir.display()
    )]
    Busy {
        /// The folder.
        dir: PathBuf,
        /// What the lock file says about its last taker (PID, host, command), or `an unknown process`:
        /// the holder itself for an exclusive lock, one of the holders (or a finished one) for a
        /// shared lock.
        holder: String,
    },
    /// The lock file could not be created, opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes `dir/`[`LOCK_FILE`] without waiting; `what` (e.g. `stiff gram`) is recorded with
    /// this process's id and host so that a refused writer can say who holds the folder.
    /// The folder must exist.
    pub fn try_acquire(dir: &Path, mode: LockMode, what: &str) -> Result<DirLock, LockError> {
        Self::try_acquire_file(dir, LOCK_FILE, mode, what)
    }

    /// [`DirLock::try_acquire`] with another lock file name in `dir` (one lock per task, e.g.
    /// the merge of a sharded job).
    pub fn try_acquire_file(dir: &Path, file_name: &str, mode: LockMode, what: &str) -> Result<DirLock, LockError> {
        let path = dir.join(file_name);
        let file = open_lock_file(&path)?;
        let locked = match mode {
            LockMode::Exclusive => file.try_lock(),
            LockMode::Shared => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Busy { dir: dir.to_path_buf(), holder: read_holder(&file) })
            }
            Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
        }
        let lock = DirLock { file, path };
        lock.record(what);
        Ok(lock)
    }

    /// Takes `dir/file_name` exclusively, waiting for the current holder to finish (for short
    /// critical sections whose repetition is harmless, like merging finished tiles).
    pub fn wait_exclusive(dir: &Path, file_name: &str, what: &str) -> Result<DirLock, LockError> {
        let path = dir.join(file_name);
        let file = open_lock_file(&path)?;
        file.lock().map_err(|source| LockError::Io { path: path.clone(), source })?;
        let lock = DirLock { file, path };
        lock.record(what);
        Ok(lock)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes who holds the lock into the lock file: informational only (shared holders
    /// overwrite each other), so a failure to write it is ignored.
    fn record(&self, what: &str) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let on = if host.is_empty() { String::new() } else { format!(" on {host}") };
        let line = format!("PID {}{on}, {what}\n", std::process::id());
        let mut f = &self.file;
        let _ = f.set_len(0).and_then(|_| f.rewind()).and_then(|_| f.write_all(line.as_bytes()));
    }
}

fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io { path: path.to_path_buf(), source })
}

/// The holder's line from the lock file, bounded (the file is ours, but may be damaged).
fn read_holder(file: &File) -> String {
    let mut text = String::new();
    let mut f = file;
    let _ = f.rewind().and_then(|_| f.take(200).read_to_string(&mut text));
    let text = text.lines().next().unwrap_or("").trim();
    if text.is_empty() {
        "an unknown process".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_writer_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::try_acquire(dir.path(), LockMode::Exclusive, "stiff gram").unwrap();
        let err = DirLock::try_acquire(dir.path(), LockMode::Exclusive, "stiff gram").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains(&format!("PID {}", std::process::id())) && msg.contains("stiff gram"), "{msg}");
        assert!(DirLock::try_acquire(dir.path(), LockMode::Shared, "stiff cross").is_err());
        drop(held);
        let again = DirLock::try_acquire(dir.path(), LockMode::Exclusive, "stiff measure").unwrap();
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }

    #[test]
    fn shared_holders_coexist_and_keep_exclusive_ones_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::try_acquire(dir.path(), LockMode::Shared, "shard 0/2").unwrap();
        let b = DirLock::try_acquire(dir.path(), LockMode::Shared, "shard 1/2").unwrap();
        assert!(DirLock::try_acquire(dir.path(), LockMode::Exclusive, "stiff gram").is_err());
        drop((a, b));
        DirLock::try_acquire(dir.path(), LockMode::Exclusive, "stiff gram").unwrap();
    }

    #[test]
    fn waiting_lock_waits_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::wait_exclusive(dir.path(), ".merge.lock", "merge").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _l = DirLock::wait_exclusive(dir.path(), ".merge.lock", "merge 2").unwrap();
                tx.send(()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(rx.try_recv().is_err(), "the second merge must wait");
            drop(held);
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("released lock is taken");
        });
    }

    #[test]
    fn a_missing_folder_is_an_io_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("missing");
        let err = DirLock::try_acquire(&gone, LockMode::Exclusive, "x").unwrap_err();
        assert!(err.to_string().contains(&gone.join(LOCK_FILE).display().to_string()), "{err}");
    }
}
