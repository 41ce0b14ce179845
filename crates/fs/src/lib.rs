//! # stiff-fs
//!
//! The one way this workspace publishes a file: write it under a temporary name in the target's
//! own directory, flush and sync it, then rename it over the target. Readers see the old file or
//! the new one, never half of one, and a failed or interrupted write leaves no temporary behind
//! (the temporary is deleted when it is dropped unpublished).
//!
//! Published files get the permissions `File::create` would give them (`0666` less the umask),
//! not the owner-only mode of a temporary. A writer of a result folder holds a [`DirLock`] for its
//! whole run, so that two runs never publish into one folder at once.
//!
//! Temporary names are random (the `tempfile` crate), not derived from the process id: several
//! nodes of a cluster writing into one shared folder can have the same PID.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("result.json");
//! stiff_fs::write_atomic(&path, b"{}")?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};

mod lock;

pub use lock::{DirLock, LockError, LockMode, LOCK_FILE};
pub use tempfile::{TempDir, TempPath};

/// A write that could not be completed; `path` is the file that was being published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    /// The target file.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    /// An error writing `path`.
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self { path: path.to_path_buf(), source }
    }
}

/// The directory a file lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes sure `dir` is a directory results can be written into, before any long work starts:
/// creates it (and its parents) when missing, then proves it by creating, filling (4 KiB), syncing
/// and removing a temporary file there. A path that is a file, a read-only folder or a full disk
/// is reported here, with `dir` named, instead of after minutes of computation.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), WriteError> {
    if dir.exists() && !dir.is_dir() {
        return Err(WriteError::new(dir, std::io::Error::other("exists and is not a directory")));
    }
    std::fs::create_dir_all(dir).map_err(|e| WriteError::new(dir, e))?;
    let mut probe =
        tempfile::Builder::new().prefix(".stiff-write-check.").tempfile_in(dir).map_err(|e| WriteError::new(dir, e))?;
    probe.write_all(&[0u8; 4096]).and_then(|_| probe.as_file().sync_all()).map_err(|e| WriteError::new(dir, e))?;
    probe.close().map_err(|e| WriteError::new(dir, e))
}

/// A temporary `.<file_name>.<random><suffix>` in `dir`, created with mode `0666` less the
/// process umask (and a folder's default ACL), as `File::create` would: the rename publishes it as
/// it is, and `tempfile`'s own default (0600) would hide results from the rest of a group.
fn temp_file_in(dir: &Path, file_name: &str, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let prefix = format!(".{file_name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

/// Writes `bytes` to `path` atomically. The directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically from a closure that fills a buffered writer. An error from the
/// closure (or from flushing) leaves the target untouched and no temporary file behind.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let tmp = filled_temp(path, fill)?;
    tmp.persist(path).map_err(|e| WriteError::new(path, e.error))?;
    Ok(())
}

/// Publishes `bytes` at `path` only if nothing is there yet, atomically: of several writers
/// racing for one path exactly one wins, and nobody's file is replaced (the rename refuses an
/// existing target: `renameat2(RENAME_NOREPLACE)`, or a hard link where that is missing).
/// Returns `true` when this call published the file, `false` when `path` already existed (the
/// caller then reads what is there and compares it with what it meant to write).
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, WriteError> {
    let tmp = filled_temp(path, |w| w.write_all(bytes))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(WriteError::new(path, e.error)),
    }
}

/// A temporary beside `path`, filled by `fill`, flushed and synced, ready to be renamed.
fn filled_temp<F>(path: &Path, fill: F) -> Result<tempfile::NamedTempFile, WriteError>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let file_name = path
        .file_name()
        .ok_or_else(|| WriteError::new(path, std::io::Error::other("not a file path")))?
        .to_string_lossy()
        .into_owned();
    let mut tmp = temp_file_in(parent_dir(path), &file_name, ".tmp").map_err(|e| WriteError::new(path, e))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w).map_err(|e| WriteError::new(path, e))?;
        w.flush().map_err(|e| WriteError::new(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| WriteError::new(path, e))?;
    Ok(tmp)
}

/// A fresh, unique, empty temporary file beside `path` whose name ends in `suffix` (writers that
/// pick their format from the extension, like PNG encoders, need `.png`). Hand it to a writer
/// that wants a path, then [`publish`] it; dropped unpublished, it is deleted.
pub fn temp_path_beside(path: &Path, suffix: &str) -> Result<TempPath, WriteError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    temp_file_in(parent_dir(path), &file_name, suffix).map(|f| f.into_temp_path()).map_err(|e| WriteError::new(path, e))
}

/// A private, empty hidden folder inside `dir` (same file system, so its files can be renamed
/// into `dir`): for writers that produce several files by path, whose results are then staged
/// in a [`FileSet`]. Removed with whatever is left in it when dropped.
pub fn staging_dir(dir: &Path) -> Result<TempDir, WriteError> {
    tempfile::Builder::new().prefix(".staging.").tempdir_in(dir).map_err(|e| WriteError::new(dir, e))
}

/// Syncs a temporary written through its path and renames it over `path`.
pub fn publish(tmp: TempPath, path: &Path) -> Result<(), WriteError> {
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| WriteError::new(path, e))?;
    tmp.persist(path).map_err(|e| WriteError::new(path, e.error))
}

/// Removes `path` if it is there; a missing file is not an error. Writers of a set of files call
/// it on the set's completion file before replacing any member (see [`FileSet`]).
pub fn remove_if_exists(path: &Path) -> Result<(), WriteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WriteError::new(path, e)),
    }
}

/// Environment variable read by [`FileSet::publish`] for crash tests only: when set to `K`, the
/// process aborts right after the `K`-th rename, as a `kill -9` there would (temporaries stay).
pub const ABORT_AFTER_RENAMES_ENV: &str = "STIFF_FS_TEST_ABORT_AFTER_RENAMES";

/// Several files published together: each is staged under a temporary name, and only when all of
/// them are written are they renamed into place (in the order staged), so a failure while writing
/// any one of them publishes none. Dropped unpublished, the staged temporaries are deleted.
///
/// Renames are one file at a time, so a crash between two of them would leave a mix. The **last
/// staged file is the set's completion file**: [`FileSet::publish`] first removes an existing
/// completion file (an older set stops being complete), then renames the other files, and the
/// completion file last. A reader must treat a set whose completion file is missing as absent
/// (an interrupted publish); it never sees new members next to an old completion file.
#[derive(Debug, Default)]
pub struct FileSet {
    staged: Vec<(TempPath, PathBuf)>,
}

impl FileSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages `path` with the given content.
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
        self.stage_with(path, |w| w.write_all(bytes))
    }

    /// Stages `path` filled by a closure.
    pub fn stage_with<F>(&mut self, path: &Path, fill: F) -> Result<(), WriteError>
    where
        F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
    {
        let tmp = temp_path_beside(path, ".tmp")?;
        let file = std::fs::OpenOptions::new().write(true).truncate(true).open(&tmp);
        let mut w = std::io::BufWriter::new(file.map_err(|e| WriteError::new(path, e))?);
        fill(&mut w).map_err(|e| WriteError::new(path, e))?;
        let file = w.into_inner().map_err(|e| WriteError::new(path, e.into_error()))?;
        file.sync_all().map_err(|e| WriteError::new(path, e))?;
        self.staged.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Stages a file that a path-taking writer fills: `write` gets the temporary path.
    pub fn stage_path<F, E>(&mut self, path: &Path, suffix: &str, write: F) -> Result<(), E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<WriteError>,
    {
        let tmp = temp_path_beside(path, suffix)?;
        write(&tmp)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| WriteError::new(path, e))?;
        self.staged.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// The completion file (the last staged path), if anything is staged.
    pub fn completion(&self) -> Option<&Path> {
        self.staged.last().map(|(_, p)| p.as_path())
    }

    /// Removes the old completion file, then renames every staged file into place, the
    /// completion file last.
    pub fn publish(self) -> Result<(), WriteError> {
        let abort_after = std::env::var(ABORT_AFTER_RENAMES_ENV).ok().and_then(|v| v.parse::<usize>().ok());
        if self.publish_steps(abort_after)? {
            std::process::abort();
        }
        Ok(())
    }

    /// Crash simulation for tests: publishes like [`FileSet::publish`] but stops right after
    /// `renames` renames, keeping the remaining temporaries on disk as a killed process would.
    #[doc(hidden)]
    pub fn publish_interrupted_after(self, renames: usize) -> Result<(), WriteError> {
        self.publish_steps(Some(renames)).map(|_| ())
    }

    /// Returns true when it stopped after `stop_after` renames (the unpublished temporaries are
    /// kept on disk), false when everything was published.
    fn publish_steps(self, stop_after: Option<usize>) -> Result<bool, WriteError> {
        let Some(done) = self.completion().map(Path::to_path_buf) else { return Ok(false) };
        remove_if_exists(&done)?;
        let mut staged = self.staged;
        let stopped = stop_after.is_some_and(|k| k < staged.len());
        let left = if stopped { staged.split_off(stop_after.unwrap_or(0)) } else { Vec::new() };
        for (tmp, path) in staged {
            if path == done {
                // The members' renames must be durable before the completion file appears.
                sync_dir(parent_dir(&path)).map_err(|e| WriteError::new(&path, e))?;
            }
            tmp.persist(&path).map_err(|e| WriteError::new(&path, e.error))?;
        }
        for (tmp, path) in left {
            tmp.keep().map_err(|e| WriteError::new(&path, e.error))?;
        }
        Ok(stopped)
    }
}

/// Flushes a directory's entries (renames) to disk; a no-op where directories cannot be opened.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn writable_dir_is_created_and_unusable_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a").join("b");
        ensure_writable_dir(&out).unwrap();
        assert!(out.is_dir());
        assert!(leftovers(&out).is_empty(), "the probe file is removed");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_writable_dir(&file).unwrap_err();
        assert_eq!(err.path, file);
        assert!(err.to_string().contains("not a directory"), "{err}");
        let below_file = file.join("sub");
        assert!(ensure_writable_dir(&below_file).is_err());
    }

    /// Writers racing for one path with different contents: exactly one publishes, the file
    /// holds its bytes whole, and nothing temporary is left (20 trials of 4 threads).
    #[test]
    fn write_new_publishes_once_among_racing_writers() {
        for trial in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("plan.json");
            let gate = std::sync::Barrier::new(4);
            let won: Vec<(usize, bool)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|k| {
                        let (gate, path) = (&gate, &path);
                        s.spawn(move || {
                            let bytes = vec![b'a' + k as u8; 4096 * (k + 1)];
                            gate.wait();
                            (k, write_new(path, &bytes).unwrap())
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<usize> = won.iter().filter(|w| w.1).map(|w| w.0).collect();
            assert_eq!(winners.len(), 1, "trial {trial}: {won:?}");
            let k = winners[0];
            assert_eq!(std::fs::read(&path).unwrap(), vec![b'a' + k as u8; 4096 * (k + 1)], "trial {trial}");
            assert!(leftovers(dir.path()).is_empty(), "trial {trial}: {:?}", leftovers(dir.path()));
            assert!(!write_new(&path, b"later").unwrap(), "an existing file is kept");
        }
    }

    #[cfg(unix)]
    #[test]
    fn read_only_dir_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // root ignores permissions: then the check cannot be exercised here.
        let can_write_anyway = std::fs::write(ro.join("x"), b"x").is_ok();
        if !can_write_anyway {
            let err = ensure_writable_dir(&ro).unwrap_err();
            assert_eq!(err.path, ro);
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Published files get the mode `File::create` gives under the process umask (0644 under
    /// umask 022), not the temporary's 0600: colleagues in a group can read the results.
    #[cfg(unix)]
    #[test]
    fn published_files_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let want = mode(&plain);
        let a = dir.path().join("a.json");
        write_atomic(&a, b"{}").unwrap();
        let b = dir.path().join("fig.png");
        publish(temp_path_beside(&b, ".png").unwrap(), &b).unwrap();
        let (c, d) = (dir.path().join("c.safetensors"), dir.path().join("d.json"));
        let mut set = FileSet::new();
        set.stage(&c, b"K").unwrap();
        set.stage_path(&d, ".tmp", |p| std::fs::write(p, b"{}").map_err(|e| WriteError::new(p, e))).unwrap();
        set.publish().unwrap();
        for p in [&a, &b, &c, &d] {
            assert_eq!(mode(p), want, "{} has mode {:o}, File::create gives {want:o}", p.display(), mode(p));
        }
    }

    #[test]
    fn overwrites_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn failed_fill_keeps_old_content_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.path, p);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_names_the_target() {
        let err = write_atomic(Path::new("/nonexistent-stiff-fs/x/a.json"), b"x").unwrap_err();
        assert_eq!(err.path, Path::new("/nonexistent-stiff-fs/x/a.json"));
        assert!(err.to_string().contains("a.json"), "{err}");
    }

    #[test]
    fn temporaries_are_unique_and_keep_the_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fig.png");
        let a = temp_path_beside(&p, ".tmp.png").unwrap();
        let b = temp_path_beside(&p, ".tmp.png").unwrap();
        assert_ne!(a.to_path_buf(), b.to_path_buf());
        assert!(a.to_string_lossy().ends_with(".png"));
        drop(a);
        publish(b, &p).unwrap();
        assert!(p.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn file_set_publishes_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("gram.safetensors"), dir.path().join("stiffness.json"));
        let mut set = FileSet::new();
        set.stage(&a, b"K").unwrap();
        let failed = set.stage_with(&b, |_| Err(std::io::Error::other("analysis failed")));
        assert!(failed.is_err());
        drop(set);
        assert!(!a.exists() && !b.exists());
        assert!(leftovers(dir.path()).is_empty());

        let mut set = FileSet::new();
        set.stage(&a, b"K").unwrap();
        set.stage(&b, b"{}").unwrap();
        assert!(!a.exists(), "nothing is visible before publish");
        set.publish().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"K");
        assert_eq!(std::fs::read(&b).unwrap(), b"{}");
    }

    #[test]
    fn concurrent_writers_never_expose_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shared.json");
        let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
        std::thread::scope(|s| {
            for body in &bodies {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..10 {
                        write_atomic(p, body).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert!(bodies.contains(&got), "the final file is one writer's complete body");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn interrupted_publish_leaves_a_set_without_its_completion_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("gram.safetensors"), dir.path().join("stiffness.json"));
        // An older complete set.
        let mut set = FileSet::new();
        set.stage(&a, b"old K").unwrap();
        set.stage(&b, b"old report").unwrap();
        set.publish().unwrap();
        // A new set whose publish is cut after its first rename.
        let mut set = FileSet::new();
        set.stage(&a, b"new K").unwrap();
        set.stage(&b, b"new report").unwrap();
        assert_eq!(set.completion(), Some(b.as_path()));
        set.publish_interrupted_after(1).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new K");
        // Before the fix the old report stayed beside the new Gram: a complete-looking mix.
        assert!(!b.exists(), "the completion file of the old set must be gone");
        assert_eq!(leftovers(dir.path()).len(), 1, "the killed publish leaves its other temporary");

        // Cut before any rename: the old set is no longer complete either.
        let mut set = FileSet::new();
        set.stage(&a, b"K3").unwrap();
        set.stage(&b, b"R3").unwrap();
        set.publish().unwrap();
        let mut set = FileSet::new();
        set.stage(&a, b"K4").unwrap();
        set.stage(&b, b"R4").unwrap();
        set.publish_interrupted_after(0).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"K3");
        assert!(!b.exists());

        // A rerun publishes the whole set.
        let mut set = FileSet::new();
        set.stage(&a, b"K5").unwrap();
        set.stage(&b, b"R5").unwrap();
        set.publish().unwrap();
        assert_eq!((std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()), (b"K5".to_vec(), b"R5".to_vec()));
    }

    #[test]
    fn remove_if_exists_ignores_a_missing_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        remove_if_exists(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        remove_if_exists(&p).unwrap();
        assert!(!p.exists());
        std::fs::create_dir(&p).unwrap();
        assert_eq!(remove_if_exists(&p).unwrap_err().path, p);
    }
}
